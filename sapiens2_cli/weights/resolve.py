"""Which weights a run uses and their identity (file name and sha256) for the settings.

`--checkpoint PATH` is used as given (a file, or a transformers save_pretrained folder);
`--checkpoint hf://USER/REPO` and `--arch NAME` alone go through the Hugging Face cache
(`sapiens2_cli.weights.hub`, downloading on first use). Hashing a 20 GB checkpoint takes a
while, so the sha256 is cached in `$XDG_CACHE_HOME/sapiens2/checkpoint-sha256.json`
(default `~/.cache/...`), keyed by the file's absolute path, size and modification time:
a changed file is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sapiens2_cli.files import file_sha256
from sapiens2_cli.model import CheckpointInfo, get_config, inspect_checkpoint

log = logging.getLogger(__name__)
HASH_CACHE = "checkpoint-sha256.json"


@dataclass(frozen=True)
class Weights:
    path: Path
    info: CheckpointInfo  # read from the header; no tensor loaded yet
    arch_flag: str | None  # --arch as given; load_backbone checks the file against it

    @property
    def arch(self) -> str:
        """Zoo name for the settings, or "custom"."""
        return self.info.arch or "custom"


def resolve_weights(arch: str | None, checkpoint: Path | str | None) -> Weights:
    """The checkpoint to use: `checkpoint` if given (checked against `arch` if both are;
    `hf://USER/REPO` a repository), else `arch` (default 1b) from the hub cache. Reads
    headers only."""
    if (repo := hub_repo(checkpoint)) is not None:
        from sapiens2_cli.weights.hub import resolve_repo

        checkpoint = resolve_repo(repo)
    if checkpoint is None:
        from sapiens2_cli.weights.hub import resolve_checkpoint

        arch = get_config(arch or "1b").name  # unknown names fail here, before the hub
        checkpoint = resolve_checkpoint(arch)
    return Weights(Path(checkpoint), inspect_checkpoint(checkpoint, arch), arch)


def hub_repo(checkpoint: Path | str | None) -> str | None:
    """USER/REPO of `hf://USER/REPO` (a Path made from it reads `hf:/USER/REPO`), else None."""
    text = str(checkpoint or "")
    for scheme in ("hf://", "hf:/"):
        if text.startswith(scheme):
            return text[len(scheme) :].strip("/")
    return None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sapiens2"


def checkpoint_sha256(path: Path) -> str:
    """sha256 of the file, from the cache when the file has not changed since it was hashed.
    A transformers folder's is the sha256 of its files' names and hashes (config.json, the
    index, the weights), so any change to any of them changes it."""
    if path.is_dir():
        from sapiens2_cli.model.transformers_format import identity_files

        lines = "".join(f"{f.name} {checkpoint_sha256(f)}\n" for f in identity_files(path))
        return hashlib.sha256(lines.encode()).hexdigest()
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = cache_dir() / HASH_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if key in cache:
        return cache[key]
    if stat.st_size > 2**30:
        log.warning("hashing %s once (%.1f GB) for the output", path, stat.st_size / 1e9)
    cache[key] = file_sha256(path)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{HASH_CACHE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, cache_file)
    except OSError as e:  # a read-only home only costs hashing again next time
        log.debug("cannot write the hash cache %s: %s", cache_file, e)
    return cache[key]
