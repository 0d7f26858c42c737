"""The Samba peer (see samba_peer.py)."""

from .samba_peer import samba, smb_env

__all__ = ["samba", "smb_env"]
