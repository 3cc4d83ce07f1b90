//! The console: the PL011 behind one lock, a `log` backend that tags each line with its CPU, and
//! untagged `println!` for the report. A whole line is written under the lock, so lines from
//! different CPUs never interleave. Nothing on the stage-2 fault path prints.

use core::fmt::{self, Write};
use log::{Level, LevelFilter, Metadata, Record};
use spin::Mutex;

use crate::percpu;
use crate::uart::Pl011;

static UART: Mutex<Option<Pl011>> = Mutex::new(None);

struct Logger;

static LOGGER: Logger = Logger;

/// Starts the console on the PL011 at `base` and installs the logger. CPU0, MMU on.
pub fn init(base: usize) {
    // SAFETY: `base` is the PL011 from the DTB, identity-mapped as Device memory by mmu.rs, and
    // only this module drives it.
    let uart = unsafe { Pl011::new(base) };
    uart.init();
    *UART.lock() = Some(uart);
    // Only fails if a logger is already set: then it is ours.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Writes pre-formatted arguments as one line (no CPU tag).
pub fn write_line(args: fmt::Arguments) {
    if let Some(uart) = UART.lock().as_mut() {
        let _ = uart.write_fmt(args);
        let _ = uart.write_str("\n");
    }
}

/// Writes a line even if another CPU holds (or died holding) the console lock: for the panic
/// and fatal-exception paths, which must get their last words out.
pub fn write_line_forced(args: fmt::Arguments) {
    for _ in 0..1_000_000 {
        if let Some(mut guard) = UART.try_lock() {
            if let Some(uart) = guard.as_mut() {
                let _ = uart.write_fmt(args);
                let _ = uart.write_str("\n");
            }
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the holder has had a million spins; it is stuck or dead (e.g. it is this CPU,
    // which faulted while printing). Interleaving now beats losing the reason we are failing.
    unsafe { UART.force_unlock() };
    write_line(args);
}

/// `println!` for report lines: untagged, whole line under the console lock.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::write_line(format_args!($($arg)*))
    };
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let cpu = percpu::index();
        match record.level() {
            Level::Info => write_line(format_args!("[cpu{cpu}] {}", record.args())),
            level => write_line(format_args!("[cpu{cpu}] {level}: {}", record.args())),
        }
    }

    fn flush(&self) {}
}
