"""The cloud registry's rules and image grants (and the push of them to gateways)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casemate.edge import messages as m
from casemate.edge.cloud.gateways import GatewayRegistry
from casemate.edge.cloud.policy import Effect, Rule, image_pattern
from casemate.edge.cloud.records import _grant, _rule
from casemate.edge.linkconfig import (
    utc_now,
)
from casemate.edge.models import (
    EdgeGateway,
    EdgeImage,
    EdgeRule,
)
from casemate.errors import (
    InvalidInput,
    NotFound,
)
from casemate.events import (
    EdgePolicyChanged,
)
from casemate.risks.imageref import InvalidImageReference, split_repository


class RuleRegistry(GatewayRegistry):
    """Adds the approval rules and image grants to :class:`GatewayRegistry`."""

    # Rules and images --------------------------------------------------------------------------

    def add_rule(
        self,
        *,
        effect: Effect | str,
        by: str,
        gateway: str = "*",
        caller: str = "*",
        action: str = "*",
        image: str = "*",
        digest: str = "*",
        note: str = "",
        position: int | None = None,
    ) -> Rule:
        """Add a rule (appended unless ``position`` is given; lower positions go first)."""
        try:
            effect = Effect(effect)
        except ValueError:
            raise InvalidInput("effect must be allow, deny or manual") from None
        image = image_pattern(image)
        draft = Rule(
            id=0,
            effect=effect,
            gateway=gateway,
            caller=caller,
            action=action,
            image=image,
            digest=digest,
            note=note[:200],
        )
        with self.db.session() as s:
            if position is None:
                last = s.scalar(select(func.max(EdgeRule.position)))
                position = (last or 0) + 10
            row = EdgeRule(
                position=position,
                gateway=draft.gateway,
                caller=draft.caller,
                action=draft.action,
                image=draft.image,
                digest=draft.digest,
                effect=str(draft.effect),
                note=draft.note,
                created_at=utc_now(),
                created_by=by,
            )
            s.add(row)
            s.flush()
            rule = _rule(row)
            self.audit.append(
                EdgePolicyChanged(
                    actor=by,
                    outcome="ok",
                    action="rule_added",
                    target=str(rule.id),
                    changes={"rule": rule.describe(), "position": position, "note": rule.note},
                ),
                session=s,
            )
        return rule

    def list_rules(self) -> list[Rule]:
        with self.db.reader() as s:
            return self._rules(s)

    @staticmethod
    def _rules(s: Session) -> list[Rule]:
        rows = s.scalars(select(EdgeRule).order_by(EdgeRule.position, EdgeRule.id)).all()
        return [_rule(r) for r in rows]

    def remove_rule(self, rule_id: int, *, by: str) -> None:
        with self.db.session() as s:
            row = s.get(EdgeRule, rule_id)
            if row is None:
                raise NotFound(f"rule {rule_id} does not exist")
            described = _rule(row).describe()
            s.delete(row)
            self.audit.append(
                EdgePolicyChanged(
                    actor=by,
                    outcome="ok",
                    action="rule_removed",
                    target=str(rule_id),
                    changes={"rule": described},
                ),
                session=s,
            )

    def set_image(
        self,
        name: str,
        *,
        by: str,
        digests: Iterable[str] = (),
        actions: Iterable[str] = (),
        users: Iterable[str] = (),
    ) -> m.ImageGrant:
        """Create or replace the record of a repository (``nginx`` → docker.io/library/nginx)."""
        try:
            normalised, _tag, pinned = split_repository(name)
        except InvalidImageReference as e:
            raise InvalidInput(e.message) from None
        if pinned is not None:
            digests = [*digests, pinned]
        grant = m.ImageGrant(
            name=normalised, digests=tuple(digests), actions=tuple(actions), users=tuple(users)
        )
        with self.db.session() as s:
            row = s.scalars(select(EdgeImage).where(EdgeImage.name == normalised)).one_or_none()
            if row is None:
                row = EdgeImage(name=normalised)
                s.add(row)
            row.digests, row.actions, row.users = (
                list(grant.digests),
                list(grant.actions),
                list(grant.users),
            )
            row.updated_at, row.updated_by = utc_now(), by
            self.audit.append(
                EdgePolicyChanged(
                    actor=by,
                    outcome="ok",
                    action="image_set",
                    target=normalised,
                    changes=grant.to_doc(),
                ),
                session=s,
            )
        return grant

    def list_images(self) -> list[m.ImageGrant]:
        with self.db.reader() as s:
            return self._images(s)

    @staticmethod
    def _images(s: Session) -> list[m.ImageGrant]:
        return [_grant(r) for r in s.scalars(select(EdgeImage).order_by(EdgeImage.name)).all()]

    def remove_image(self, name: str, *, by: str) -> None:
        try:
            normalised = split_repository(name)[0]
        except InvalidImageReference as e:
            raise InvalidInput(e.message) from None
        with self.db.session() as s:
            row = s.scalars(select(EdgeImage).where(EdgeImage.name == normalised)).one_or_none()
            if row is None:
                raise NotFound(f"no image record for {normalised}")
            s.delete(row)
            self.audit.append(
                EdgePolicyChanged(
                    actor=by, outcome="ok", action="image_removed", target=normalised
                ),
                session=s,
            )

    def build_push(self, gateway_id: str) -> m.Push:
        """The signed image records for one gateway."""
        push = m.Push(
            gateway_id=gateway_id, issued_at=self._clock(), images=tuple(self.list_images())
        )
        return m.sign(push, self.keys().ed25519)

    def approved_gateway_ids(self) -> list[str]:
        with self.db.reader() as s:
            return list(
                s.scalars(
                    select(EdgeGateway.id)
                    .where(EdgeGateway.state == "approved")
                    .order_by(EdgeGateway.id)
                ).all()
            )
