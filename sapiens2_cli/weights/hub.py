"""Where the published checkpoints live on the Hugging Face Hub, and getting one locally.

Everything network- and cache-related is `huggingface_hub`'s: its cache (`HF_HOME`,
`HF_HUB_CACHE`), token (`HF_TOKEN`, `hf auth login`), offline switch (`HF_HUB_OFFLINE`),
endpoint (`HF_ENDPOINT`), resumable downloads and progress bar. This module only maps
short names to repositories and turns the hub's exceptions into one fix-it sentence.
"""

from __future__ import annotations

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
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from sapiens2_cli.errors import Sapiens2Error
from sapiens2_cli.model.config import get_config

#: Dense-prediction heads published with a Sapiens2 backbone, and the sizes they exist for.
TASKS: tuple[str, ...] = ("pose", "seg", "normal", "pointmap")
TASK_ARCHS: tuple[str, ...] = ("0.4b", "0.8b", "1b", "5b")


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
    if name not in TASK_ARCHS:
        raise Sapiens2Error(
            f"there is no {task} checkpoint for arch {name}: "
            f"task checkpoints exist for {', '.join(TASK_ARCHS)}"
        )
    return HubFile(f"facebook/sapiens2-{task}-{name}", f"sapiens2_{tag}_{task}.safetensors")


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
    names = sorted(s.rfilename for s in info.siblings or () if s.rfilename.endswith(".safetensors"))
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
        candidates = sorted(Path(folder).glob("*.safetensors"))
    return candidates[0] if len(candidates) == 1 else None


def _unavailable(file: HubFile, arch: str, task: str | None) -> Sapiens2Error:
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
