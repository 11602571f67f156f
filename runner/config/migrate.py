"""Config keys that moved or were renamed: the old spelling keeps working, with a one-line note
naming the new one."""

from __future__ import annotations

import sys

# Keys that moved: old prefix -> new prefix (the old ones keep working, with a one-line note).
MOVED_KEYS = {
    "trainer.early_stopping.": "callbacks.early_stopping.",
    "trainer.checkpoint.": "callbacks.model_checkpoint.",
}
# Keys renamed: old key -> new key. `strategy` is the tf.distribute group; a pretrained model's
# transfer mode is `model.transfer`.
RENAMED_KEYS = {"model.strategy": "model.transfer"}


def migrate_override(override: str) -> tuple[str | None, str | None]:
    """(the override in today's keys or None to drop it, a note for the user or None)."""
    sign = override[: len(override) - len(override.lstrip("+~"))]
    key, _, value = override[len(sign) :].partition("=")
    if key == "trainer.checkpoint.save_best_only":
        if value.strip().lower() == "false":
            return "trainer.evaluate=last", (
                "trainer.checkpoint.save_best_only=false is now trainer.evaluate=last "
                "(best.keras always holds the best epoch)"
            )
        return (
            None,
            "trainer.checkpoint.save_best_only is gone: best.keras always holds the best epoch",
        )
    if sign == "+" and key == "data.files":  # once the only way to name VOC's tar: it exists now
        return f"{key}={value}", None
    if key in RENAMED_KEYS:
        return f"{sign}{RENAMED_KEYS[key]}={value}", f"{key} is now {RENAMED_KEYS[key]}"
    for old, new in MOVED_KEYS.items():
        if key.startswith(old):
            moved = new + key[len(old) :]
            return f"{sign}{moved}={value}", f"{key} is now {moved}"
    return override, None


def migrate_argv() -> None:
    """Rewrite moved keys on the command line (sys.argv) before Hydra parses it."""
    migrated = []
    for argument in sys.argv[1:]:
        override, note = migrate_override(argument)
        if note:
            print(f"note: {note}", file=sys.stderr, flush=True)
        if override is not None:
            migrated.append(override)
    sys.argv[1:] = migrated
