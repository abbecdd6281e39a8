"""Live-tunable system config: the agent's proposals, and the read side services use.

A change goes through the records (`RecordsStore.propose_config`: applied at once, or pending an
operator's approval when the active profile's agent rules ask for it; every applied change lands
in `system_config_history` with who, when, old and new value) and is announced on `audit` as
`config.changed` with the config version after it. A running service picks it up without a restart
through a `ConfigWatcher`: it feeds the watcher the audit messages it sees (`note`) or simply
calls `refresh()` now and then; the watcher re-reads the values only when the records' config
version moved, one cheap query otherwise. The service applies what moved (`pending`) on its next
message and says so on `audit` (`applied`: action `config.applied` with the key and version),
once per service per version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from tradeos_lab.contracts import Audit

if TYPE_CHECKING:
    from tradeos_lab.contracts import Message
    from tradeos_lab.pipeline.service import ServiceContext
    from tradeos_lab.stores.records import ConfigProposal, RecordsStore

#: The audit action announcing an applied config change (`new_value` holds key, value, version).
CONFIG_CHANGED: Final = "config.changed"
#: The audit action announcing a proposal waiting for an operator.
CONFIG_PROPOSED: Final = "config.proposed"
#: The audit action of a running service that took a changed value into use.
CONFIG_APPLIED: Final = "config.applied"
#: How long a watcher trusts its values without an announcement before asking the version again.
WATCH_MAX_AGE_S: Final = 5.0


def announcement(records: RecordsStore, proposal: ConfigProposal, *, actor: str) -> Audit:
    """The `audit` payload telling services a proposal was applied (or awaits approval)."""
    applied = proposal.status == "applied"
    return Audit(
        actor=actor,
        action=CONFIG_CHANGED if applied else CONFIG_PROPOSED,
        target=f"config:{proposal.key}",
        old_value=proposal.old_value,
        new_value={
            "key": proposal.key,
            "value": proposal.new_value,
            "proposal": proposal.id,
            "status": proposal.status,
            "version": records.config_version(),
        },
        reason=proposal.reason[:4000],
    )


class ConfigWatcher:
    """The latest system config as a service sees it, re-read when its version moves.

    `get(key, default)` answers from memory; `refresh()` asks the records for the version (at
    most every `max_age_s` unless an announcement came) and re-reads every value when it moved.
    `changed` lists the keys that changed at the last refresh that found a new version.
    `pending(keys)` / `acknowledge(changes)`: what moved since its holder last applied it (the
    values of the first read are what the holder starts under, not changes).
    """

    def __init__(
        self,
        records: RecordsStore,
        *,
        max_age_s: float = WATCH_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.records = records
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self.version = -1
        self.values: dict[str, Any] = {}
        self.changed: set[str] = set()
        self._checked_at = -float("inf")
        self._announced = True
        #: The values the holder last applied, by key (None until the first read).
        self._applied: dict[str, Any] | None = None

    def note(self, message: Message) -> bool:
        """Take an `audit` message; True when it announced a config change (read next time)."""
        payload = message.payload
        if isinstance(payload, Audit) and payload.action == CONFIG_CHANGED:
            self._announced = True
            return True
        return False

    def refresh(self) -> bool:
        """Re-read the config if it may have changed; True when a new version was read."""
        with self._lock:
            now = self._clock()
            if not self._announced and now - self._checked_at < self.max_age_s:
                return False
            self._checked_at, self._announced = now, False
            version = self.records.config_version()
            if version == self.version:
                return False
            values = self.records.config_values()
            self.changed = {
                k for k in set(values) | set(self.values) if values.get(k) != self.values.get(k)
            }
            self.values, self.version = values, version
            if self._applied is None:
                self._applied = dict(values)
            return True

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key` as of the last refresh (refreshing first when due)."""
        self.refresh()
        return self.values.get(key, default)

    def pending(self, keys: Iterable[str]) -> dict[str, Any]:
        """The keys among `keys` whose value moved since the holder applied it (refreshing
        first when due), with their values now (None for a key removed)."""
        self.refresh()
        with self._lock:
            applied = self._applied or {}
            return {k: self.values.get(k) for k in keys if self.values.get(k) != applied.get(k)}

    def acknowledge(self, changes: Mapping[str, Any]) -> None:
        """Note `changes` (from `pending`) as applied: they are not pending any more."""
        with self._lock:
            if self._applied is not None:
                self._applied.update(changes)


def applied(
    ctx: ServiceContext, parent: Message, watcher: ConfigWatcher, key: str, effect: str
) -> Message:
    """The `audit` entry of a service that took the new value of `key` into use (`effect`: what
    it changed), with the config version it read."""
    version = watcher.version
    reason = f"{ctx.producer} applies {key} of config version {version}: {effect}"
    return ctx.audit(
        parent,
        action=CONFIG_APPLIED,
        target=f"config:{key}",
        new_value={"key": key, "value": watcher.values.get(key), "version": version},
        reason=reason[:4000],
    )
