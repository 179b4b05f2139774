"""The program behind snapshot_v2.ht: a snapshot file of format version 2, written by heaptrail
before snapshots recorded function names, which tests/test_function_names.py loads to check
that such files still load and that their frames are named from this source. Made in this
directory (relative filenames, so that the frames find this file from here) with heaptrail at
commit 6f858c7:

    python -c "import heaptrail; heaptrail.start(10);
    exec(compile(open('names_v2_app.py').read(), 'names_v2_app.py', 'exec'), {})"

Do not edit: the snapshot's line numbers point into this file.
"""
import heaptrail

keep = []


class Registry:
    def register(self, n):
        def make():
            return [bytes(1000) for _ in range(n)]  # MAKE

        keep.append(make())  # CALL_MAKE


Registry().register(200)  # CALL_REGISTER
mine = heaptrail.Filter(True, "names_v2_app.py")
heaptrail.take_snapshot().filter_traces([mine]).dump("snapshot_v2.ht")
