"""At most a few requests per browser session (or ``gradio_client.Client``) waiting or running.

Gradio 6.31 has no per-session bound of its own (``concurrency_limit`` and ``max_size`` count
every session together), but its queue sees every job of a session from submission on:
``Queue.push`` receives each submission with its ``session_hash`` (the browser page's, or the
Client's), and ``Queue.event_ids_to_events`` holds every job from its push until it has run or
was cancelled (Stop / ``job.cancel()`` while queued removes it; a run that ends, as well).
``install(demo)`` wraps the queue's ``push``: a submission to one of our endpoints
(``prompt_free.app.endpoint``) from a session that already has ``settings.max_session_requests()`` of them
queued or running is refused at once, before it is queued, with a message saying why; other
sessions are not affected. The count and the push happen under one lock, so five jobs sent at
the same moment cannot all slip in.

The refusal is Gradio's "validation error" answer (HTTP 422 with ``gr.validate`` entries):
``gradio_client`` raises ``ValidationError`` with the message, and the browser shows it on the
endpoint's first input and in its status (a plain error would reach ``gradio_client`` only as
"400 Bad Request").
"""

from __future__ import annotations

import asyncio

import gradio as gr

from prompt_free import settings

LIMITED = "pfd_session_limited"  # attribute set on the functions whose jobs are counted


def limit_message(limit: int) -> str:
    return (f"You already have {limit} request{'' if limit == 1 else 's'} waiting or running (the most one session may have; "
            "PFD_MAX_SESSION_REQUESTS). Wait for one to finish, or press Stop, then try again.")


def pending(queue, session) -> int:
    """Jobs of ``session`` for our endpoints that are queued or running."""
    return sum(1 for event in list(queue.event_ids_to_events.values())
               if event.session_hash == session and getattr(event.fn.fn, LIMITED, False))


def install(demo) -> None:
    """Refuse a session's submission over the limit (call after ``demo.queue(...)``)."""
    queue = demo._queue
    if getattr(queue.push, LIMITED, False):
        return
    original = queue.push
    locks = {}  # one asyncio lock per event loop (the server's)

    async def push(body, request, username):
        fn = demo.fns.get(body.fn_index) if body.fn_index is not None else None
        if fn is None or not getattr(fn.fn, LIMITED, False) or not body.session_hash:
            return await original(body, request, username)
        lock = locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:
            limit = settings.max_session_requests()
            if pending(queue, body.session_hash) >= limit:
                names = list(fn.input_parameter_names or []) or ["request"]
                refusal = {**gr.validate(False, limit_message(limit)), "parameter_name": names[0]}
                return False, [refusal], "validator_error"
            return await original(body, request, username)

    setattr(push, LIMITED, True)
    queue.push = push
