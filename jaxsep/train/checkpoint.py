"""Save and restore a run: train state + data-iterator state + JSON metadata, as one step.

A thin wrapper over orbax's V0 `CheckpointManager` (kept in one module so a move to the V1 API
stays local). Each step directory holds three items written together:
  * `state`: the train-state pytree (`StandardSave`; restored straight into its shardings);
  * `data`: every process's iterator state (`process_<i>-of-<n>.json`);
  * `meta`: JSON (config, plateau / early-stopping state).
orbax writes a step into a temporary directory and renames it when every item is complete, so a
crash or `kill -9` mid-save leaves only complete steps; leftovers are removed on the next start.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxsep.errors import JaxsepError, first_line


class IteratorStateHandler(ocp.CheckpointHandler):
    """Per-process JSON of `iterator.get_state()` (dict or bytes).

    Same file layout as `grain.checkpoint.CheckpointHandler`, but it accepts any iterator with
    `get_state()`/`set_state()` (grain's only accepts grain iterator classes and restarts their
    prefetch on restore).
    """

    def _filename(self, directory: epath.Path) -> epath.Path:
        import jax

        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: IteratorStateSave) -> None:
        state = args.item.get_state()
        text = state.decode() if isinstance(state, bytes) else json.dumps(state)
        self._filename(directory).write_text(text)

    def restore(self, directory: epath.Path, args: IteratorStateRestore) -> Any:
        filename = self._filename(directory)
        if not filename.exists():
            raise JaxsepError(f"{filename}: data-iterator state missing from checkpoint")
        text = filename.read_text()
        current = args.item.get_state()
        args.item.set_state(text.encode() if isinstance(current, bytes) else json.loads(text))
        return args.item

    def metadata(self, directory: epath.Path) -> None:
        return None

    def structure(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    item: Any


class RunCheckpointer:
    """Save every `save_every` steps (and on `force`), keep the latest `keep` steps."""

    def __init__(
        self, directory: str | Path, *, save_every: int, keep: int, async_save: bool = True
    ):
        self.directory = Path(directory).resolve()
        policies = ocp.checkpoint_managers
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=policies.FixedIntervalPolicy(max(int(save_every), 1)),
            preservation_policy=policies.LatestN(max(int(keep), 1)),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        # orbax removes unfinished steps in the background and only awaits that before the next
        # save; wait now so a restore or a second manager never races with the removal.
        await_cleanup = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
        if await_cleanup is not None:
            await_cleanup()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter, meta: dict, *, force: bool = False) -> bool:
        """Start saving `step` if the policy (or `force`) says so; returns whether it did."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=IteratorStateSave(data_iter),
            meta=ocp.args.JsonSave(meta),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, abstract_state, data_iter, step: int | None = None) -> tuple[Any, dict]:
        """Restore `(state, meta)` at `step` (default latest) and rewind `data_iter` in place.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct` with shardings: arrays come back
        placed on the mesh, ready for the jitted step.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise JaxsepError(f"{self.directory}: no checkpoint to restore")
        self._check_shapes(abstract_state, step)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=IteratorStateRestore(data_iter),
            meta=ocp.args.JsonRestore(),
        )
        try:
            restored = self.manager.restore(step, args=args)
        except JaxsepError:
            raise
        except Exception as e:  # orbax raises many types for a damaged step
            raise JaxsepError(
                f"{self.directory}/{step}: cannot restore checkpoint: {first_line(e)}"
            ) from e
        return restored.state, restored.meta

    def _check_shapes(self, abstract_state, step: int) -> None:
        """One-line error when the run's state does not fit the saved one (a changed config):
        orbax would start the restore, fail with a message suggesting `strict=False`, and its
        background threads would print tracebacks after the error."""
        where = f"{self.directory}/{step}"
        try:
            saved = ocp.StandardCheckpointHandler().metadata(epath.Path(where) / "state")
        except Exception as e:  # orbax/tensorstore raise many types for a damaged step
            raise JaxsepError(f"{where}: cannot read checkpoint metadata ({first_line(e)})") from e
        saved, wanted = _shapes(getattr(saved, "item_metadata", saved)), _shapes(abstract_state)
        hint = "(resume with the config it was saved with, or train in a new --workdir)"
        for name, shape in sorted(
            wanted.items(), key=lambda kv: (kv[0].split("/")[0] != "params", kv[0])
        ):
            if name not in saved:
                raise JaxsepError(f"{where}: checkpoint has no '{name}' {hint}")
            if saved[name] != shape:
                raise JaxsepError(
                    f"{where}: '{name}' is {saved[name]} in the checkpoint, {shape} in this run "
                    f"{hint}"
                )
        extra = sorted(set(saved) - set(wanted))
        if extra:
            raise JaxsepError(f"{where}: checkpoint has '{extra[0]}' that this run lacks {hint}")

    def wait(self) -> None:
        """Block until background saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """`{"params/hidden/kernel": shape}` of a state or of orbax's metadata of one (whose
    namedtuple fields come back as dict keys: `simple` key paths name both alike)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): tuple(getattr(leaf, "shape", ()))
        for path, leaf in flat
    }
