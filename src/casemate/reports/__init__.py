"""Output formats shared by the features (vuln, posture): JSON, SARIF 2.1.0, CycloneDX 1.5.

A list of findings in, one document out. No feature imports here; features import these."""
