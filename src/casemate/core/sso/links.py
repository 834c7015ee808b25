"""Which Casemate user an external subject is (table ``sso_links``, migration 0011).

A link ``(provider, subject) → user`` is made at the first single sign-on of a subject: to a
new user, or to an existing user without a local password and without another link (an
account an admin created beforehand to give it roles). A local account with a password is
never taken over by a directory entry or an ID token that happens to carry the same name.
Links are deleted with their user.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from casemate.core.db import Base, UtcDateTime


class SsoLink(Base):
    __tablename__ = "sso_links"
    __table_args__ = (UniqueConstraint("provider", "subject", name="uq_sso_links_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
