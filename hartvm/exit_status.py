"""The exit statuses of ``hartvm`` commands, defined once (the CLI, the VM
processes and their clients share them).

``boot``: the guest's own status when it ends through the test finisher or
HTIF (0 for pass, and for a power-off), else one of the BOOT_* below.
``run``, ``exec``, ``shell``: the command's own status, else TIMEOUT or
GUEST_FAILED, as ``timeout(1)`` and ``docker run`` report theirs. Ctrl-A X on
a console (``boot``, ``shell``, ``exec -t``) ends with QUIT.
"""

BAD_INPUT = 2            # missing or invalid file, bad size or option
PANIC = 3                # boot: the guest kernel panicked
INTERNAL = 70            # boot: a hartvm bug (EX_SOFTWARE)
INSTRUCTION_LIMIT = 124  # boot: --max-instructions reached
HALTED = 125             # boot: every hart waits for an interrupt that can never come
TIMEOUT = 124            # run, exec: --timeout expired and the command was killed
GUEST_FAILED = 125       # run, exec, shell: hartvm or the guest failed
BROKEN_PIPE = 128 + 13   # stdout closed by its reader, as a shell reports SIGPIPE
INTERRUPTED = 130        # Ctrl-C (128 + SIGINT)
QUIT = 128 + 1           # Ctrl-A X on a console: the user hung up (as SIGHUP would)
KILLED = 128 + 9         # boot --gdb: the debugger killed the machine (as SIGKILL would)
FAILED = 1               # the other commands: with a message
