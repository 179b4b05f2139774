/*
 * CPython 3.13: the blocks parked in the interpreter's free lists. A parked block holds a
 * dead object that CPython keeps for reuse instead of freeing it, so it must not count as
 * live.
 *
 * While heaptrail traces, the float, tuple, list, dict and key-table lists are closed
 * (closed_free_lists.c), so this walk finds the slice cache and, between a full collection
 * reopening the float and tuple lists and heaptrail's next traced allocation closing them
 * again, whatever was parked meanwhile. Where the lists cannot be closed (free_lists.h), the reference tracer's
 * DESTROY event (cpython_frames.c) does not reach heaptrail for every death (CPython
 * 3.13.0-3.13.2's eval loop deallocates objects without calling the tracer, gh-130382; its
 * specialized float operations do in every 3.13 release). The tracer walks these lists
 * before it reports (snapshots, the watcher's totals, traced memory) and forgets every parked
 * block it still traces.
 *
 * Walked: floats (linked through ob_type), tuples of 1-20 items (linked through ob_item[0]),
 * lists, dicts, the slice cache. Not walked: dict key tables (not objects: a reused one would never
 * be traced again, so a parked one keeps its trace, as on every version), contexts, async
 * generator wrappers, object stack chunks. Each walk is bounded by the list's own count.
 *
 * GIL held. Nothing here allocates or calls into Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if PY_VERSION_HEX >= 0x030D0000

#define Py_BUILD_CORE 1
#include "internal/pycore_interp.h"
#undef Py_BUILD_CORE

/* A GC object's block starts with its PyGC_Head (tuples, lists, dicts and slices have no other
   pre-header); a float's starts where the object does. */
#define HT_GC_HEAD (2 * sizeof(uintptr_t))

#endif

/* Calls `parked(block, data)` for every block parked in the main interpreter's free lists;
   returns how many. 0 and no call before 3.13 (3.11 and 3.12 keep traced objects out of their
   free lists: free_list_bypass.c) and without free lists. GIL held. */
size_t
ht_for_each_parked_block(void (*parked)(uintptr_t block, void *data), void *data)
{
#if PY_VERSION_HEX < 0x030D0000 || defined(Py_GIL_DISABLED) || !defined(WITH_FREELISTS)
    (void)parked;
    (void)data;
    return 0;
#else
    struct _Py_object_freelists *lists = &PyInterpreterState_Main()->object_state.freelists;
    size_t n = 0;
    PyFloatObject *f = lists->floats.items;
    for (int i = 0; f != NULL && i < lists->floats.numfree; i++, n++) {
        parked((uintptr_t)f, data);
        f = (PyFloatObject *)Py_TYPE((PyObject *)f);
    }
    for (int size = 0; size < PyTuple_NFREELISTS; size++) {
        PyTupleObject *t = lists->tuples.items[size];
        for (int i = 0; t != NULL && i < lists->tuples.numfree[size]; i++, n++) {
            parked((uintptr_t)t - HT_GC_HEAD, data);
            t = (PyTupleObject *)t->ob_item[0];
        }
    }
    for (int i = 0; i < lists->lists.numfree && i < PyList_MAXFREELIST; i++, n++) {
        parked((uintptr_t)lists->lists.items[i] - HT_GC_HEAD, data);
    }
    for (int i = 0; i < lists->dicts.numfree && i < PyDict_MAXFREELIST; i++, n++) {
        parked((uintptr_t)lists->dicts.items[i] - HT_GC_HEAD, data);
    }
    if (lists->slices.slice_cache != NULL) {
        parked((uintptr_t)lists->slices.slice_cache - HT_GC_HEAD, data);
        n++;
    }
    return n;
#endif
}
