/*
 * Which way heaptrail sees objects CPython reuses from its free lists, decided once per
 * interpreter build (include after Python.h):
 *  - HT_FREE_LISTS_CLOSABLE (3.13+, with free lists and a GIL): the lists are closed while
 *    heaptrail traces (closed_free_lists.c), so every such object is allocated;
 *  - HT_TRACKS_LAST_ALLOC (3.13+ otherwise): the reference tracer tells a reused object from a
 *    fresh one by the thread's latest allocation (cpython_frames.c);
 *  - neither (3.11, 3.12): dicts, lists and tuples are kept out of their lists
 *    (free_list_bypass.c), and the float list is closed (closed_free_lists.c).
 */
#ifndef HEAPTRAIL_FREE_LISTS_H
#define HEAPTRAIL_FREE_LISTS_H

#if PY_VERSION_HEX >= 0x030D0000
#if !defined(Py_GIL_DISABLED) && defined(WITH_FREELISTS)
#define HT_FREE_LISTS_CLOSABLE 1
#else
#define HT_TRACKS_LAST_ALLOC 1
#endif
#endif

#endif
