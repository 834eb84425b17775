"""The daemon's scheduling guarantees with the ``sequential`` engine backend.

``tests/test_daemon.py`` runs them on the default (``batched``) backend; the same test
functions run here against a daemon started with ``QWEN3TTSD_ENGINE=sequential``, so both
backends stay covered without running the whole daemon suite twice.
"""

from __future__ import annotations

import pytest

from .helpers import daemon_env, start_daemon, synth
from .test_daemon import (  # noqa: F401 - collected here with this module's fixture
    test_bad_frames_get_clean_errors_while_another_stream_continues,
    test_disconnect_and_cancel_stop_generation,
    test_seeded_requests_are_deterministic,
    test_session_requests_continue_one_codec_stream_in_order,
    test_short_request_is_not_stuck_behind_a_long_one,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tiny_models, tmp_path_factory):
    rt = tmp_path_factory.mktemp("rt-seq")
    env = daemon_env(tiny_models["custom_voice"], rt / "state", idle_timeout=-1, conn_idle_timeout=30,
                     engine="sequential")
    p = start_daemon(rt, env)
    synth(rt / "tts.sock", text="Warm up.", voice="ryan", max_frames=2)
    yield rt, p
    p.terminate()
    p.wait(30)
