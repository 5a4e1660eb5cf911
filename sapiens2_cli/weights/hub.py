"""Where the published checkpoints live on the Hugging Face Hub, and getting one locally.

Everything network- and cache-related is `huggingface_hub`'s: its cache (`HF_HOME`,
`HF_HUB_CACHE`), token (`HF_TOKEN`, `hf auth login`), offline switch (`HF_HUB_OFFLINE`),
endpoint (`HF_ENDPOINT`), resumable downloads and progress bar. This module only maps
short names to repositories, picks the files a repository's layout needs, and turns the
hub's exceptions into one fix-it sentence.

A repository may hold the original checkpoint, transformers' files (config.json,
model.safetensors or its shards), or both: the original file is downloaded when there is
one, else config.json and the weights (`model/transformers_format.py` reads them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import (
    HfApi,
    constants,
    get_token,
    hf_hub_download,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.config import get_config

#: Dense-prediction heads published with a Sapiens2 backbone, and the sizes they exist for.
TASKS: tuple[str, ...] = ("pose", "seg", "normal", "pointmap", "matting")
TASK_ARCHS: tuple[str, ...] = ("0.4b", "0.8b", "1b", "5b")
#: Tasks published for fewer sizes than TASK_ARCHS.
ARCHS_OF_TASK: dict[str, tuple[str, ...]] = {"matting": ("1b",)}
#: What transformers writes beside (or instead of) the original checkpoint.
TRANSFORMERS_WEIGHTS = re.compile(r"^model(-\d+-of-\d+)?\.safetensors$")
TRANSFORMERS_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class HubFile:
    """A checkpoint's repository and the file name it is expected to have there."""

    repo_id: str
    filename: str  # expected, not guaranteed: the repo's single .safetensors file wins

    @property
    def url(self) -> str:
        return f"{constants.ENDPOINT}/{self.repo_id}"


def hub_file(arch: str, task: str | None = None) -> HubFile:
    """The repository and expected file name for a pretrain (task None) or task checkpoint."""
    name = get_config(arch).name
    assert name is not None  # zoo configs are named
    tag = name.replace("-", "_")
    if task is None:
        return HubFile(f"facebook/sapiens2-pretrain-{name}", f"sapiens2_{tag}_pretrain.safetensors")
    task = task.strip().lower()
    if task not in TASKS:
        raise Sapiens2Error(f"unknown task '{task}': choose one of {', '.join(TASKS)}")
    archs = task_archs(task)
    if name not in archs:
        which = task if task in ARCHS_OF_TASK else "task"
        raise Sapiens2Error(
            f"there is no {task} checkpoint for arch {name}: "
            f"{which} checkpoints exist for {', '.join(archs)}"
        )
    return HubFile(f"facebook/sapiens2-{task}-{name}", f"sapiens2_{tag}_{task}.safetensors")


def task_archs(task: str) -> tuple[str, ...]:
    """The sizes a task's checkpoints are published for."""
    return ARCHS_OF_TASK.get(task, TASK_ARCHS)


def original_checkpoints(names) -> list[str]:
    """The .safetensors files that are not transformers' own (nor a PEFT adapter)."""
    return sorted(
        n
        for n in names
        if n.endswith(".safetensors")
        and not TRANSFORMERS_WEIGHTS.match(Path(n).name)
        and Path(n).name not in ADAPTER_FILES
    )


def _checkpoint_names(names) -> list[str]:
    """The original checkpoints among `names`, else any .safetensors (a repository whose
    one checkpoint is called model.safetensors)."""
    names = list(names)
    return original_checkpoints(names) or sorted(
        n for n in names if n.endswith(".safetensors") and Path(n).name not in ADAPTER_FILES
    )


def resolve_checkpoint(
    arch: str,
    task: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    local_dir: Path | None = None,
) -> Path:
    """Local path of a published checkpoint, downloading it on first use.

    A cached copy is used without network when `HF_HUB_OFFLINE=1` or the hub is
    unreachable. Raises Sapiens2Error (one fix-it sentence) when it cannot be had.
    """
    file = hub_file(arch, task)
    local = {"revision": revision, "token": token, "local_dir": local_dir}
    try:
        try:
            return Path(hf_hub_download(file.repo_id, file.filename, **local))
        except RemoteEntryNotFoundError:  # online, but the file has another name
            listed = _listed_safetensors(file, revision, token)
            return Path(hf_hub_download(file.repo_id, listed, **local))
    except LocalEntryNotFoundError:  # offline or unreachable, expected name not cached
        cached = _cached_checkpoint(file, revision, local_dir)
        if cached is not None:
            return cached
        raise _unavailable(file, arch, task) from None
    except HfHubHTTPError as e:
        raise _http_error(e, file, revision, token) from None


def is_cached(arch: str, task: str | None = None) -> bool:
    """Whether the checkpoint is in the local Hugging Face cache (no network)."""
    return _cached_checkpoint(hub_file(arch, task), None, None) is not None


def _listed_safetensors(file: HubFile, revision: str | None, token: str | None) -> str:
    """The repository's one .safetensors file, for when the expected name is absent."""
    info = HfApi().model_info(file.repo_id, revision=revision, token=token)
    names = _checkpoint_names(s.rfilename for s in info.siblings or ())
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise Sapiens2Error(
            f"{file.url} has no single .safetensors checkpoint (found: {found}): download the "
            "file you want with `hf download` and pass it with --checkpoint"
        )
    return names[0]


def _cached_checkpoint(file: HubFile, revision: str | None, local_dir: Path | None) -> Path | None:
    """The cached checkpoint under its expected name, else the snapshot's one .safetensors."""
    if local_dir is not None:
        local_dir = Path(local_dir)
        expected = local_dir / file.filename
        candidates = [expected] if expected.is_file() else sorted(local_dir.glob("*.safetensors"))
        candidates = [local_dir / n for n in _checkpoint_names(c.name for c in candidates)]
    else:
        path = try_to_load_from_cache(file.repo_id, file.filename, revision=revision)
        if isinstance(path, str):
            return Path(path)
        try:
            folder = snapshot_download(
                file.repo_id,
                revision=revision,
                allow_patterns="*.safetensors",
                local_files_only=True,
            )
        except LocalEntryNotFoundError:
            return None
        candidates = [
            Path(folder) / n for n in _checkpoint_names(p.name for p in Path(folder).iterdir())
        ]
    return candidates[0] if len(candidates) == 1 else None


def resolve_repo(
    repo_id: str,
    revision: str | None = None,
    token: str | None = None,
    local_dir: Path | None = None,
) -> Path:
    """Local path of any repository's Sapiens2 weights (a user's fine-tuned model): its one
    original-format file, else a folder of transformers' config.json and weights. Offline,
    or with the hub unreachable, what an earlier call downloaded is used."""
    file = HubFile(repo_id, "")
    local = {"revision": revision, "token": token, "local_dir": local_dir}
    names = None
    if not constants.is_offline_mode():
        try:
            info = HfApi().model_info(repo_id, revision=revision, token=token)
            names = [s.rfilename for s in info.siblings or ()]
        except HfHubHTTPError as e:
            raise _http_error(e, file, revision, token) from None
        except Exception as e:
            if not _is_connection_error(e):
                raise
            names = None  # unreachable: what the cache holds
    try:
        if names is not None:
            wanted = _repo_files(repo_id, names)
            paths = [Path(hf_hub_download(repo_id, n, **local)) for n in wanted]
            return paths[0] if len(paths) == 1 else paths[0].parent
        return _cached_repo(repo_id, revision, local_dir)
    except LocalEntryNotFoundError:
        raise _unavailable(file, None, None) from None
    except HfHubHTTPError as e:
        raise _http_error(e, file, revision, token) from None


def _is_connection_error(error: Exception) -> bool:
    return isinstance(error, (OfflineModeIsEnabled, ConnectionError, TimeoutError)) or (
        type(error).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests")
    )


def _repo_files(repo_id: str, names: list[str]) -> list[str]:
    """The files to download from a repository listing `names`."""
    originals = original_checkpoints(names)
    if len(originals) == 1:
        return originals
    listed = set(names)
    shards = sorted(n for n in names if TRANSFORMERS_WEIGHTS.match(n) and "-of-" in n)
    if "config.json" in listed and "model.safetensors" in listed:
        return ["config.json", "model.safetensors"]
    if "config.json" in listed and "model.safetensors.index.json" in listed:
        return ["config.json", "model.safetensors.index.json", *shards]
    url = f"{constants.ENDPOINT}/{repo_id}"
    if any(n in listed for n in ADAPTER_FILES):
        raise Sapiens2Error(
            f"{url} holds a PEFT adapter without merged weights: merge it into its base model "
            "(model.merge_and_unload(), then save_pretrained) and use that repository"
        )
    found = ", ".join(originals) or "none"
    raise Sapiens2Error(
        f"{url} has neither one original .safetensors checkpoint (found: {found}) nor "
        "transformers' config.json with model.safetensors: pass a file with --checkpoint"
    )


def _cached_repo(repo_id: str, revision: str | None, local_dir: Path | None) -> Path:
    """What `resolve_repo` downloaded before, from the cache or `local_dir`, without network."""
    if local_dir is not None:
        folder = Path(local_dir)
        if not folder.is_dir():
            raise LocalEntryNotFoundError(f"{folder} does not exist")
    else:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    originals = original_checkpoints(p.name for p in folder.iterdir())
    if len(originals) == 1:
        return folder / originals[0]
    if (folder / "config.json").is_file():
        return folder  # transformers_format checks the rest
    raise LocalEntryNotFoundError(f"nothing usable cached for {repo_id}")


def _unavailable(file: HubFile, arch: str | None, task: str | None) -> Sapiens2Error:
    if arch is None:
        command = f"sapiens2 download --repo {file.repo_id}"
    else:
        command = f"sapiens2 download --arch {arch}" + (f" --task {task}" if task else "")
    if constants.is_offline_mode():
        return Sapiens2Error(
            f"{file.repo_id} is not in the local cache and HF_HUB_OFFLINE is set: "
            f"run `{command}` once with network access (HF_HUB_OFFLINE unset)"
        )
    return Sapiens2Error(
        f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} and {file.repo_id} is not "
        f"cached: check your connection, proxy or HF_ENDPOINT, then run `{command}` again"
    )


def _http_error(
    error: HfHubHTTPError, file: HubFile, revision: str | None, token: str | None
) -> Sapiens2Error:
    """One fix-it sentence for each way the hub can refuse a request."""
    has_token = bool(token or get_token())
    if isinstance(error, GatedRepoError):
        if has_token:
            return Sapiens2Error(
                f"{file.repo_id} is gated and your token has no access yet: accept the Sapiens2 "
                f"license at {file.url} with the account the token belongs to"
            )
        return Sapiens2Error(
            f"{file.repo_id} is gated: accept the Sapiens2 license at {file.url}, then log in "
            "with `hf auth login`, set HF_TOKEN, or pass --token"
        )
    if isinstance(error, RevisionNotFoundError):
        return Sapiens2Error(
            f"revision '{revision}' does not exist in {file.repo_id}: drop --revision or pick "
            f"a branch, tag or commit listed at {file.url}"
        )
    if isinstance(error, RepositoryNotFoundError):
        hint = "check your token's permissions" if has_token else "log in or pass --token"
        return Sapiens2Error(
            f"{file.repo_id} was not found or needs authentication: {hint}, and check that "
            f"{constants.ENDPOINT} is the hub you meant (HF_ENDPOINT)"
        )
    status = error.response.status_code if error.response is not None else "an error"
    if status in (401, 403):
        return Sapiens2Error(
            f"the hub refused access to {file.repo_id} ({status}): accept the license at "
            f"{file.url} and log in with `hf auth login`, set HF_TOKEN, or pass --token"
        )
    return Sapiens2Error(
        f"the hub answered {status} for {file.repo_id}: try again later, or use a cached "
        "copy with HF_HUB_OFFLINE=1"
    )
