"""`magi play`: play an action-conditioned world model in the browser (docs/design.md §8).

`session` holds one player's game (emulator, keys -> actions, `Magi.stream`); `server` is the web app
(Starlette + uvicorn, one WebSocket per player) and the command line; `host_check` the Host-header
guard against DNS rebinding; `static/` the page.
"""

from magi.play.server import create_app, main
from magi.play.session import ModelLoadError, PlaySession, World, action_table, load_world

__all__ = ["create_app", "main", "load_world", "World", "PlaySession", "ModelLoadError", "action_table"]
