//! `heaptrail attach`'s way into a running Python 3.11-3.13 process on x86-64 Linux: with the
//! main thread stopped (ptrace), queue `Py_AddPendingCall(PyRun_SimpleString, code)`, which the
//! interpreter runs in its main thread between two bytecodes, holding the GIL: a point where
//! running Python code is safe. Only functions that do not allocate are called in the stopped
//! thread: `Py_IsInitialized`, libc's `mmap` (a page for the code, written through
//! /proc/PID/mem) and `Py_AddPendingCall` (a short lock and a store into a fixed array); malloc
//! never, since the thread may be stopped inside it holding its lock.
//!
//! The answer has the fields the CLI checks (`_cli/remote.py`): `version` (PY_VERSION_HEX),
//! `queued`, `any_thread`, `address`, `size`, or an `error` name with a `message`/`errno`.

mod symbols;
mod tracee;

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use serde::Serialize;

use symbols::Symbols;
use tracee::{Error, Tracee};

const PROT_READ: u64 = 0x1;
const MAP_PRIVATE_ANONYMOUS: u64 = 0x02 | 0x20;
const SYS_FUTEX: i64 = 202;
const FIRST_SUPPORTED: u64 = 0x030B_0000;
const FIRST_UNSUPPORTED: u64 = 0x030E_0000;
const NAMES: &[&str] = &[
    "Py_Version",
    "Py_Initialize",
    "Py_IsInitialized",
    "Py_AddPendingCall",
    "PyRun_SimpleString",
    "PyInterpreterState_Main",
    "_PyEval_AddPendingCall",
    "mmap",
];

#[derive(Serialize, Default)]
struct Answer {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    queued: bool,
    any_thread: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<i32>,
}

impl Answer {
    fn error(error: &'static str) -> Answer {
        Answer {
            error: Some(error),
            ..Answer::default()
        }
    }

    fn from_error(version: Option<u64>, err: Error) -> Answer {
        let mut answer = match err {
            Error::Attach(errno) => Answer {
                errno: Some(errno),
                ..Answer::error("attach")
            },
            Error::Exited => Answer::error("exited"),
            Error::Timeout(what) => Answer {
                message: Some(what.into()),
                ..Answer::error("timeout")
            },
            Error::Failed(what) => Answer {
                message: Some(what),
                ..Answer::error("failed")
            },
        };
        answer.version = version;
        answer
    }
}

/// Reads the Python version of process `pid` and, given `code`, queues it as a pending call
/// there. `timeout`: seconds for the thread to stop and for each call to return.
#[pyfunction]
#[pyo3(signature = (pid, code, timeout))]
fn _queue_pending_call(
    py: Python<'_>,
    pid: i32,
    code: Option<Vec<u8>>,
    timeout: f64,
) -> PyResult<Py<PyAny>> {
    let timeout = Duration::from_secs_f64(timeout.clamp(0.01, 3600.0));
    let answer = py.detach(move || queue(pid, code.as_deref(), timeout));
    Ok(pythonize::pythonize(py, &answer)
        .map_err(PyErr::from)?
        .unbind())
}

fn queue(pid: i32, code: Option<&[u8]>, timeout: Duration) -> Answer {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let exe = exe.as_ref().and_then(|p| p.to_str());
    let symbols = match Symbols::resolve(pid, exe, NAMES) {
        Ok(symbols) => symbols,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Answer {
                errno: Some(libc::EPERM),
                ..Answer::error("attach")
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Answer::error("exited"),
        Err(e) => {
            return Answer {
                message: Some(e.to_string()),
                ..Answer::error("failed")
            }
        }
    };
    // Py_Version (PY_VERSION_HEX) is exported from 3.11 on; older or non-Python processes lack it.
    let Some(version_at) = symbols.get("Py_Version") else {
        let python = symbols.get("Py_Initialize").is_some();
        return Answer::error(if python { "old-python" } else { "not-python" });
    };
    let mut tracee = match Tracee::seize(pid, Instant::now() + timeout) {
        Ok(tracee) => tracee,
        Err(err) => return Answer::from_error(None, err),
    };
    let version = match tracee.read_u64(version_at) {
        Ok(v) => v & 0xFFFF_FFFF,
        Err(err) => return Answer::from_error(None, err),
    };
    match queue_in(&mut tracee, &symbols, version, code, timeout) {
        Ok(answer) => answer,
        Err(err) => Answer::from_error(Some(version), err),
    }
    // `tracee` is dropped here: registers written back, thread released.
}

fn queue_in(
    tracee: &mut Tracee,
    symbols: &Symbols,
    version: u64,
    code: Option<&[u8]>,
    timeout: Duration,
) -> Result<Answer, Error> {
    let answer = Answer {
        version: Some(version),
        ..Answer::default()
    };
    let Some(code) = code else { return Ok(answer) };
    if !(FIRST_SUPPORTED..FIRST_UNSUPPORTED).contains(&version) {
        return Ok(Answer {
            error: Some("unsupported"),
            ..answer
        });
    }
    let need = |name: &str| {
        symbols
            .get(name)
            .ok_or_else(|| Error::Failed(format!("{name} not found in the process")))
    };
    if tracee.call(need("Py_IsInitialized")?, &[], timeout)? as i32 == 0 {
        return Ok(Answer {
            error: Some("not-initialized"),
            ..answer
        });
    }
    let size = (code.len() as u64 + 1).div_ceil(4096) * 4096;
    let address = tracee.call(
        need("mmap")?,
        &[0, size, PROT_READ, MAP_PRIVATE_ANONYMOUS, u64::MAX, 0],
        timeout,
    )?;
    if address == 0 || address == u64::MAX {
        return Ok(Answer {
            error: Some("mmap-failed"),
            ..answer
        });
    }
    // The page is read-only for the target; a tracer writes through /proc/PID/mem.
    let mut text = code.to_vec();
    text.push(0);
    tracee.write(address, &text)?;
    let run = need("PyRun_SimpleString")?;
    let queued = tracee.call(need("Py_AddPendingCall")?, &[run, address], timeout)? as i32 == 0;
    // Py_AddPendingCall's calls wait for the main thread. If it is blocked in a system call (a
    // long sleep, joining workers), 3.12+ can also queue the same call for whichever thread
    // runs bytecode first (flag 0: any thread), through the internal but exported
    // _PyEval_AddPendingCall. The code runs once: the first to run claims the request, the
    // other finds it claimed and does nothing. Only from a main thread blocked in a system
    // call: then it holds no lock the call takes. 3.13's version also takes the GIL's internal
    // mutex, which a thread holds while it wakes another through a futex: not from a futex
    // call there.
    // Queued already: a failure here only costs the any-thread copy.
    let any_thread = queued
        && version >= 0x030C_0000
        && matches!(tracee.system_call(), Some(call) if version < 0x030D_0000 || call != SYS_FUTEX)
        && symbols.get("_PyEval_AddPendingCall").is_some_and(|add| {
            let interp = match symbols.get("PyInterpreterState_Main") {
                Some(main) => tracee.call(main, &[], timeout),
                None => return false,
            };
            interp
                .and_then(|interp| tracee.call(add, &[interp, run, address, 0], timeout))
                .is_ok_and(|r| r as i32 == 0)
        });
    Ok(Answer {
        queued,
        any_thread,
        address: Some(address),
        size: Some(size),
        ..answer
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_queue_pending_call, m)?)?;
    Ok(())
}
