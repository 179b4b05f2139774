"""Leak (task-set): an asyncio service fires a background audit task per request and keeps
it in a set "so it is not garbage collected", but never discards it when done: the set keeps
every finished task and its result.

The line to blame creates the kept tasks.

# PATTERN: task-set
# ROOT: _background_tasks
"""
import asyncio

from _service import serve_async

_background_tasks = set()


async def audit(request_id, user):
    await asyncio.sleep(0)
    return {"request": request_id, "user": user, "status": "ok"}


async def handle(request):
    _background_tasks.add(asyncio.create_task(audit(request.id, request.user)))  # LEAK


serve_async(handle)
