"""`heaptrail detach PID`: stop the leak watcher that `heaptrail attach` started, and print
its verdicts."""

from ..session import HOW, Session, add_pid, add_timeout


def register(commands):
    detach = commands.add_parser(
        "detach",
        help="stop the watcher that `heaptrail attach` started",
        description=(
            "Stop the leak watcher that `heaptrail attach` started in process PID, and print "
            "its verdicts (the last window's). Tracing stops too, unless the program traced "
            "memory itself before. The process carries on. " + HOW),
        epilog="example: heaptrail detach 4242",
    )
    add_pid(detach)
    add_timeout(detach)
    detach.set_defaults(func=detach_command)


def detach_command(args):
    session = Session(args)
    try:
        status = session.send("detach")
        print(f"heaptrail detach: stopped watching process {session.target.pid} after "
              f"{status.get('seconds')} s ({status.get('windows')} windows)")
        if status.get("restored"):
            print("heaptrail detach: the watcher of `heaptrail run` is watching again, with its "
                  "own settings")
        print("\n".join(status.get("summary", [])))
        return 0
    finally:
        session.close()
