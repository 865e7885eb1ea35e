"""Upload a built release directory to the Hugging Face Hub (only on ``--push ORG/NAME``, never automatically).

``huggingface_hub.upload_folder`` sends the whole directory as ONE commit: the repository shows all of
the release or none of it. A failure before that commit (no network, bad token, interrupted) leaves
at most an empty repository and uploaded-but-uncommitted LFS blobs, which a rerun reuses and finishes.
The token comes from the environment (``HF_TOKEN``) or ``huggingface-cli login``; nothing is pushed
without one, and nothing is tried when ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import re
from pathlib import Path

from genesis_build.errors import GenesisError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PushError(GenesisError):
    """The release could not be pushed (one line, exit 2); nothing was committed."""


def check_push(repo_id: str) -> str:
    """Validate the repo id, the offline switch and the token before anything is built or sent; returns the token."""
    if not REPO_ID.match(repo_id or "") or ".." in repo_id:
        raise PushError(f"--push {repo_id!r}: expected ORG/NAME (a Hugging Face model repository id)")
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PushError(f"--push {repo_id}: offline (HF_HUB_OFFLINE is set); nothing was uploaded. Unset it and rerun")
    token = get_token()
    if not token:
        raise PushError(f"--push {repo_id}: no Hugging Face token; set HF_TOKEN (a write token) or run "
                        "`huggingface-cli login`, then rerun. Nothing was uploaded")
    return token


def push_release(folder: Path, repo_id: str, commit_message: str | None = None) -> str:
    """Upload ``folder`` to model repo ``repo_id`` in one commit; returns the commit URL.

    Raises :class:`PushError` (one line) without a token, offline, or when the Hub cannot be reached.
    """
    token = check_push(repo_id)
    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / "SHA256SUMS").is_file():
        raise PushError(f"--push {repo_id}: {folder} is not a release directory (no README.md / SHA256SUMS)")
    from huggingface_hub import create_repo, upload_folder
    from huggingface_hub.errors import HfHubHTTPError

    try:
        create_repo(repo_id, token=token, repo_type="model", exist_ok=True)
        info = upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", token=token,
                             commit_message=commit_message or f"genesis-build release {folder.name}")
    except HfHubHTTPError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PushError(f"--push {repo_id}: the Hub refused the upload ({first}); nothing was committed, rerun to retry") from None
    except (OSError, ValueError) as e:
        raise PushError(f"--push {repo_id}: cannot reach the Hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "nothing was committed, rerun to retry") from None
    except Exception as e:  # httpx (httpx2 in huggingface_hub 2.x) transport errors are not OSErrors
        if not any(c.__module__.split(".")[0].startswith(("httpx", "httpcore", "requests", "urllib3"))
                   for c in type(e).__mro__):
            raise
        raise PushError(f"--push {repo_id}: cannot reach the Hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "nothing was committed, rerun to retry") from None
    return str(getattr(info, "commit_url", info))
