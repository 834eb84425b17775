"""qwen3ttsd: a socket-activated Qwen3-TTS speech server.

Layout: ``protocol``/``client``/``errors``/``config`` are torch-free and shared by every
process; ``engine`` (torch) is imported only by the daemon; ``text`` and ``audio`` are the
front and back ends; ``daemon``, ``bridge`` and ``ctl`` are the three programs.
"""

__version__ = "0.1.0"
