/*
 * How an interpreter frame is read on each CPython version: shared by the frame walker
 * (cpython_frames.c, inside the allocator hooks) and the holder analysis (cpython_internals.c,
 * in the forked child). Include after internal/pycore_frame.h. Nothing here allocates, locks
 * or touches a reference count.
 */
#ifndef HEAPTRAIL_CPYTHON_FRAME_ACCESS_H
#define HEAPTRAIL_CPYTHON_FRAME_ACCESS_H

#if PY_VERSION_HEX >= 0x030D0000
/* 3.13: a frame runs an "executable", a code object except in C-stack entry frames. */
#define HT_FRAME_IS_CODE(f) (PyCode_Check((f)->f_executable))
/* The frame's code object; only for frames whose executable is code (it asserts so). */
#define HT_FRAME_CODE(f) _PyFrame_GetCode(f)
/* What a frame runs, for identity only: valid for any frame. */
#define HT_FRAME_EXECUTABLE(f) ((void *)(f)->f_executable)
#else
#define HT_FRAME_IS_CODE(f) (1)
#define HT_FRAME_CODE(f) ((f)->f_code)
#define HT_FRAME_EXECUTABLE(f) ((void *)(f)->f_code)
#endif

/* The innermost frame of a thread. */
static inline _PyInterpreterFrame *
ht_top_frame(PyThreadState *tstate)
{
#if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#else
    return tstate->cframe->current_frame;
#endif
}

#endif
