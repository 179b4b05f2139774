//! Calling a function in another process's main thread with ptrace (x86-64 Linux), the way a
//! debugger's "call" command does, with two differences that matter for a production process:
//!
//! * Only the main thread is stopped; the others carry on.
//! * Its whole extended register state (x87, SSE, AVX, AVX-512, AMX: the kernel's XSAVE area, of
//!   the size the kernel reports) is saved and written back. gdb 13 writes a fixed-size area,
//!   which kernels refuse on CPUs with AMX ("Couldn't write extended state status: Bad
//!   address"); gdb then stops restoring half-way, leaving `orig_rax` at -1, so a system call
//!   the thread was in is not restarted and returns -ERESTARTNOHAND (errno 514) to the program:
//!   `time.sleep()` raised `OSError: [Errno 514]` and the service died.
//!
//! While the thread is ours, each call runs on its stack below the red zone with a return
//! address of 0: when the function returns, the thread faults at address 0 and stops, the fault
//! is never delivered, and the saved registers are written back. Signals that arrive for the
//! thread meanwhile are held and raised again after it is released.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use libc::{c_long, c_uint, c_void, pid_t, user_regs_struct};

/// The XSAVE area's register set (linux/elf.h).
const NT_X86_XSTATE: usize = 0x202;
/// Bigger than any XSAVE area (AMX's is ~11 KiB); the kernel says how much it filled.
const XSTATE_CAPACITY: usize = 64 * 1024;
/// Where a called function "returns" to: the fault there is how we know it returned.
const RETURN_ADDRESS: u64 = 0;
/// Below the 128-byte red zone (and anything the interrupted code may keep just under it).
const STACK_GAP: u64 = 1024;
/// How long the thread gets to stop after we ask, when a call has to be abandoned.
const STOP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Error {
    /// ptrace refused to attach (errno: EPERM when not permitted or already traced).
    Attach(i32),
    Exited,
    Timeout(&'static str),
    Failed(String),
}

impl Error {
    fn os(what: &str) -> Error {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Error::Exited;
        }
        Error::Failed(format!("{what}: {err}"))
    }
}

enum Stop {
    /// PTRACE_EVENT_STOP: our interrupt, or a group stop.
    Event,
    /// A signal about to be delivered to the thread.
    Signal(i32),
}

/// The thread's state when it was stopped, written back after every call and on release.
struct Saved {
    regs: user_regs_struct,
    xstate: Vec<u8>,
}

/// A traced main thread. Dropping it writes the saved state back, detaches and raises the
/// held signals, on every path, errors included.
pub struct Tracee {
    tid: pid_t,
    attached: bool,
    saved: Option<Saved>,
    mem: Option<File>,
    held_signals: Vec<i32>,
}

/// ptrace with the integer/pointer arguments spelled out (the libc binding is variadic).
///
/// # Safety
/// `data` must be what `request` expects: 0, a signal number, or a pointer valid for what
/// the kernel reads or writes through it.
unsafe fn ptrace(request: c_uint, tid: pid_t, addr: usize, data: usize) -> c_long {
    // SAFETY: forwarded from the caller's contract.
    unsafe { libc::ptrace(request, tid, addr as *mut c_void, data as *mut c_void) }
}

impl Tracee {
    /// Attaches to the main thread of `pid` (PTRACE_SEIZE), stops it (PTRACE_INTERRUPT) and
    /// saves its registers.
    pub fn seize(pid: pid_t, deadline: Instant) -> Result<Tracee, Error> {
        // SAFETY: SEIZE with no options takes no pointer.
        if unsafe { ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } != 0 {
            return Err(Error::Attach(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        let mut tracee = Tracee {
            tid: pid,
            attached: true,
            saved: None,
            mem: None,
            held_signals: Vec::new(),
        };
        // SAFETY: INTERRUPT takes no pointer.
        if unsafe { ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0) } != 0 {
            return Err(Error::os("PTRACE_INTERRUPT"));
        }
        tracee.wait_for_interrupt(deadline)?;
        let regs = tracee.registers()?;
        let xstate = tracee.extended_state()?;
        tracee.saved = Some(Saved { regs, xstate });
        tracee.mem = Some(
            File::options()
                .read(true)
                .write(true)
                .open(format!("/proc/{pid}/mem"))
                .map_err(|e| Error::Failed(format!("/proc/{pid}/mem: {e}")))?,
        );
        Ok(tracee)
    }

    /// Whether the thread was stopped inside a system call, and which.
    pub fn system_call(&self) -> Option<i64> {
        let nr = self.saved.as_ref()?.regs.orig_rax as i64;
        (nr >= 0).then_some(nr)
    }

    pub fn read_u64(&self, address: u64) -> Result<u64, Error> {
        let mut bytes = [0u8; 8];
        self.memory()?
            .read_exact_at(&mut bytes, address)
            .map_err(|e| Error::Failed(format!("reading the target's memory: {e}")))?;
        Ok(u64::from_le_bytes(bytes))
    }

    /// Writes through /proc/PID/mem, which a tracer may do even on read-only pages.
    pub fn write(&self, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.memory()?
            .write_all_at(bytes, address)
            .map_err(|e| Error::Failed(format!("writing the target's memory: {e}")))
    }

    /// Calls `function(args...)` (at most six integer arguments) in the stopped thread and
    /// returns its integer result; the thread's state is back as it was when this returns.
    pub fn call(&mut self, function: u64, args: &[u64], timeout: Duration) -> Result<u64, Error> {
        assert!(
            args.len() <= 6,
            "integer arguments beyond registers are not supported"
        );
        let saved = self.saved.as_ref().expect("seized").regs;
        let mut regs = saved;
        // As just after a `call` instruction: the return address on top, rsp + 8 16-aligned.
        let sp = ((saved.rsp - STACK_GAP) & !0xf) - 8;
        self.write(sp, &RETURN_ADDRESS.to_le_bytes())?;
        regs.rsp = sp;
        regs.rip = function;
        regs.rax = 0;
        // Not in a system call: otherwise the kernel would "restart" the interrupted call at
        // our function's first instruction.
        regs.orig_rax = u64::MAX;
        regs.eflags &= !(0x400 | 0x100); // direction and trap flags clear, as the ABI expects
        let slots = [
            &mut regs.rdi,
            &mut regs.rsi,
            &mut regs.rdx,
            &mut regs.rcx,
            &mut regs.r8,
            &mut regs.r9,
        ];
        for (slot, value) in slots.into_iter().zip(args) {
            *slot = *value;
        }
        self.set_registers(&regs)?;
        self.resume(0)?;
        let deadline = Instant::now() + timeout;
        let result = loop {
            match self.wait(deadline) {
                Ok(Stop::Signal(libc::SIGSEGV)) => {
                    let now = self.registers()?;
                    if now.rip == RETURN_ADDRESS {
                        break Ok(now.rax);
                    }
                    break Err(Error::Failed(format!(
                        "the function at {function:#x} faulted"
                    )));
                }
                Ok(Stop::Signal(sig @ (libc::SIGBUS | libc::SIGILL | libc::SIGFPE))) => {
                    break Err(Error::Failed(format!(
                        "the function at {function:#x} got signal {sig}"
                    )));
                }
                Ok(Stop::Signal(sig)) => {
                    self.held_signals.push(sig);
                    self.resume(0)?;
                }
                Ok(Stop::Event) => self.resume(0)?,
                Err(Error::Timeout(_)) => {
                    // A lock the thread itself holds, say: abandon the call.
                    self.interrupt_and_wait()?;
                    break Err(Error::Timeout(
                        "a function called in the target did not return",
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        self.restore()?;
        result
    }

    fn memory(&self) -> Result<&File, Error> {
        self.mem
            .as_ref()
            .ok_or_else(|| Error::Failed("not seized".into()))
    }

    fn wait_for_interrupt(&mut self, deadline: Instant) -> Result<(), Error> {
        loop {
            match self.wait(deadline)? {
                Stop::Event => return Ok(()),
                Stop::Signal(sig) => {
                    // It reached the thread first: held, raised again on release.
                    self.held_signals.push(sig);
                    self.resume(0)?;
                }
            }
        }
    }

    fn interrupt_and_wait(&mut self) -> Result<(), Error> {
        // SAFETY: INTERRUPT takes no pointer.
        unsafe { ptrace(libc::PTRACE_INTERRUPT, self.tid, 0, 0) };
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match self.wait(deadline)? {
                Stop::Event => return Ok(()),
                Stop::Signal(libc::SIGSEGV) => return Ok(()), // the call returned just now
                Stop::Signal(sig) => {
                    self.held_signals.push(sig);
                    self.resume(0)?;
                }
            }
        }
    }

    fn wait(&mut self, deadline: Instant) -> Result<Stop, Error> {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid place for waitpid to write the status to.
            let got = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if got == self.tid {
                if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                    self.attached = false;
                    return Err(Error::Exited);
                }
                if libc::WIFSTOPPED(status) {
                    return Ok(if status >> 16 != 0 {
                        Stop::Event
                    } else {
                        Stop::Signal(libc::WSTOPSIG(status))
                    });
                }
            } else if got < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::ECHILD) {
                    self.attached = false;
                    return Err(Error::Exited);
                }
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(Error::Failed(format!("waitpid: {err}")));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout("the target's main thread did not stop"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn resume(&self, signal: i32) -> Result<(), Error> {
        // SAFETY: CONT takes a signal number (0: none) as data, no pointer.
        if unsafe { ptrace(libc::PTRACE_CONT, self.tid, 0, signal as usize) } != 0 {
            return Err(Error::os("PTRACE_CONT"));
        }
        Ok(())
    }

    fn registers(&self) -> Result<user_regs_struct, Error> {
        // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
        let mut regs: user_regs_struct = unsafe { std::mem::zeroed() };
        // SAFETY: GETREGS writes one user_regs_struct through the pointer.
        if unsafe {
            ptrace(
                libc::PTRACE_GETREGS,
                self.tid,
                0,
                &mut regs as *mut _ as usize,
            )
        } != 0
        {
            return Err(Error::os("PTRACE_GETREGS"));
        }
        Ok(regs)
    }

    fn set_registers(&self, regs: &user_regs_struct) -> Result<(), Error> {
        // SAFETY: SETREGS reads one user_regs_struct through the pointer.
        if unsafe { ptrace(libc::PTRACE_SETREGS, self.tid, 0, regs as *const _ as usize) } != 0 {
            return Err(Error::os("PTRACE_SETREGS"));
        }
        Ok(())
    }

    fn extended_state(&self) -> Result<Vec<u8>, Error> {
        let mut buffer = vec![0u8; XSTATE_CAPACITY];
        let len = xstate_regset(
            self.tid,
            libc::PTRACE_GETREGSET,
            &mut buffer,
            "reading the extended register state",
        )?;
        buffer.truncate(len);
        Ok(buffer)
    }

    /// Writes the saved registers back: the general ones first (orig_rax with them, so an
    /// interrupted system call restarts), then the whole XSAVE area, exactly the size the
    /// kernel gave.
    fn restore(&mut self) -> Result<(), Error> {
        let Some(regs) = self.saved.as_ref().map(|saved| saved.regs) else {
            return Ok(());
        };
        let general = self.set_registers(&regs);
        let tid = self.tid;
        if let Some(saved) = self.saved.as_mut() {
            xstate_regset(
                tid,
                libc::PTRACE_SETREGSET,
                &mut saved.xstate,
                "writing the extended register state back",
            )?;
        }
        general
    }
}

/// Reads (GETREGSET) or writes (SETREGSET) thread `tid`'s XSAVE area from or to `buffer`:
/// the bytes the kernel read or wrote; `what` names the step in an error.
fn xstate_regset(
    tid: pid_t,
    request: c_uint,
    buffer: &mut [u8],
    what: &str,
) -> Result<usize, Error> {
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    // SAFETY: the kernel reads or writes at most iov_len bytes at iov_base (`buffer`, borrowed
    // for the call) and sets iov_len to how many it used.
    let done = unsafe { ptrace(request, tid, NT_X86_XSTATE, &mut iov as *mut _ as usize) };
    if done != 0 {
        return Err(Error::os(what));
    }
    Ok(iov.iov_len)
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if !self.attached {
            return;
        }
        let _ = self.restore();
        // SAFETY: DETACH takes a signal number (0: none) as data, no pointer.
        unsafe { ptrace(libc::PTRACE_DETACH, self.tid, 0, 0) };
        for sig in self.held_signals.drain(..) {
            // SAFETY: tgkill takes plain integers.
            unsafe { libc::syscall(libc::SYS_tgkill, self.tid, self.tid, sig) };
        }
    }
}
