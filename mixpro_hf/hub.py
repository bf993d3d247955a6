"""Publishing a training output folder to the Hugging Face Hub: what goes up, checks before training, clear errors.

Only an allow-list of files leaves the machine (weights, config, processor, card, figures, results, the model code
that ``config.json``'s ``auto_map`` names); dotfiles,
anything in a dot-folder, symbolic links, ``checkpoint-*`` folders and pickled training states never do.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

__all__ = ["PushToHubError", "check_push_target", "files_to_push", "push_output_dir"]

DEFAULT_COMMIT_MESSAGE = "Upload MixPro model"
#: Top-level files a model repository needs (``fnmatch`` patterns); ``pytorch_model*`` only without safetensors.
ALLOWED = (
    "model*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
    "preprocessor_config.json", "processor_config.json", "image_processor_config.json", "tokenizer*.json",
    "special_tokens_map.json", "vocab.*", "README.md", "*.png", "*_results.json",
    "trainer_state.json", "mixpro_run.json",
)  # fmt: skip
PYTORCH_WEIGHTS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")


class PushToHubError(RuntimeError):
    """A push failed; ``str()`` is one line: why, that the folder is untouched, and the retry command."""

    def __init__(self, message: str, *, reason: str, retry_command: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_command = retry_command


def files_to_push(output_dir: str | os.PathLike[str]) -> list[str]:
    """The top-level regular files of ``output_dir`` that a model repository needs, sorted (an allow-list)."""
    out = Path(output_dir)
    names = [p.name for p in out.iterdir() if p.is_file() and not p.is_symlink() and not p.name.startswith(".")]
    patterns = ALLOWED if any(fnmatch.fnmatch(n, "model*.safetensors") for n in names) else ALLOWED + PYTORCH_WEIGHTS
    patterns += _remote_code_files(out)
    return sorted(n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in patterns))


def _remote_code_files(output_dir: Path) -> tuple[str, ...]:
    """The model code files ``config.json``'s ``auto_map`` names (e.g. ``ca_swin.py`` of CA-Swin) and the files
    they import relatively (a segmentation model's ``backbones.py``), without which the repository does not load
    with ``trust_remote_code=True``."""
    try:
        auto_map = json.loads((output_dir / "config.json").read_text()).get("auto_map") or {}
    except (OSError, ValueError, AttributeError):
        return ()
    references = [ref for value in auto_map.values() for ref in (value if isinstance(value, list) else [value])]
    modules = {ref.split("--")[-1].rsplit(".", 1)[0] for ref in references if isinstance(ref, str) and "." in ref}
    files = {f"{module}.py" for module in modules if module.isidentifier()}
    # and the files those import relatively (`from .backbones import ...`), which transformers loads with them
    from transformers.dynamic_module_utils import get_relative_imports

    pending = sorted(files)
    while pending:
        path = output_dir / pending.pop()
        for module in get_relative_imports(path) if path.is_file() else []:
            name = f"{module}.py"
            if name not in files and (output_dir / name).is_file():
                files.add(name)
                pending.append(name)
    return tuple(sorted(files))


def _offline() -> bool:
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES


def check_push_target(repo_id: str, token: str | None = None) -> None:
    """Check, without any network call, that ``repo_id`` can be pushed to; ``ValueError`` (one line) if not."""
    try:
        validate_repo_id(repo_id)
    except Exception as err:  # HFValidationError, or a non-string id
        raise ValueError(f"invalid Hub repository id {repo_id!r}: {err}") from None
    if _offline():
        raise ValueError("cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1); unset it or do not push")
    if not (token or get_token()):
        raise ValueError("cannot push to the Hub: no token (pass --hub_token, set HF_TOKEN or run `hf auth login`)")


def _reason(err: BaseException, endpoint: str, token_found: bool) -> str:
    """Why a push failed, in a few words."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    reasons = {
        401: "authentication failed (HTTP 401): " + ("the token was refused" if token_found else "no token found"),
        403: "permission denied (HTTP 403): the token may not write to this repository",
        404: "not found (HTTP 404): check the repository id and the endpoint",
    }
    if isinstance(err, OfflineModeIsEnabled):
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    if isinstance(err, HfHubHTTPError):
        return reasons.get(status, f"the Hub answered HTTP {status}")
    if isinstance(err, OSError) or "Connect" in type(err).__name__ or "Timeout" in type(err).__name__:
        return f"could not connect to {endpoint} (server down or unreachable)"
    return f"{type(err).__name__}: {err}".splitlines()[0]


def push_output_dir(
    output_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    endpoint: str | None = None,
    revision: str | None = None,
) -> str:
    """Upload exactly :func:`files_to_push` of ``output_dir`` to the model repository ``repo_id``; returns its URL.

    Raises ``FileNotFoundError`` when there are no weights, ``PushToHubError`` when the push fails.
    """
    out = Path(output_dir).expanduser().resolve()
    files = files_to_push(out) if out.is_dir() else []
    if not any(f.endswith((".safetensors", ".bin")) for f in files):
        raise FileNotFoundError(f"no model weights in {out} (expected model.safetensors): nothing to push")
    url = (endpoint or constants.ENDPOINT).rstrip("/")
    retry = shlex.join(["mixpro-card", str(out), "--repo_id", repo_id, "--push"] + ["--private"] * bool(private))
    retry += " --token YOUR_HF_WRITE_TOKEN" if token else ""
    retry = retry if url == "https://huggingface.co" else f"HF_ENDPOINT={shlex.quote(url)} {retry}"
    api = HfApi(endpoint=endpoint, token=token)
    try:
        if _offline():
            raise OfflineModeIsEnabled("offline mode is on")
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(out / name)) for name in files]
        api.create_commit(repo_url.repo_id, operations, commit_message=commit_message, revision=revision)
    except Exception as err:
        reason = _reason(err, url, bool(token or get_token()))
        message = (
            f"push of {out} to '{repo_id}' failed: {reason}; the output folder is complete and untouched; "
            f"retry with: {retry}"
        )
        raise PushToHubError(message, reason=reason, retry_command=retry) from err
    return str(repo_url)
