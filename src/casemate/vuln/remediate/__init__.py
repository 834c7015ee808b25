"""Remediation: which containers can be fixed in place (plan, pure) and the second manifest."""
