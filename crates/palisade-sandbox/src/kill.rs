//! The kill switch: how a monitor rule's `kill` (or anything else) stops a running sandbox,
//! whatever the platform.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What stopping a sandbox takes on one platform (Linux: a write to the supervisor's eventfd,
/// which then kills the sandbox's init; Windows: `TerminateJobObject`).
pub type Stopper = Box<dyn Fn() + Send + Sync>;

/// Stops a running sandbox from any thread. Made by the session before the sandbox exists
/// (the monitor holds it from the start); the backend [arms](KillSwitch::arm) it with its
/// own way to stop once it has one. A trigger before that is kept and acted on when armed.
#[derive(Default)]
pub struct KillSwitch {
    triggered: AtomicBool,
    stopper: Mutex<Option<Stopper>>,
}

impl std::fmt::Debug for KillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillSwitch").field("triggered", &self.triggered()).finish()
    }
}

impl KillSwitch {
    /// A switch not yet armed nor triggered.
    pub fn new() -> std::sync::Arc<KillSwitch> {
        std::sync::Arc::default()
    }

    /// Asks the backend to stop the sandbox now (at once if armed, else when it is).
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stopper.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            stop();
        }
    }

    /// Whether [`KillSwitch::trigger`] was called.
    pub fn triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Gives the switch the backend's way to stop; called by the backend as soon as the
    /// sandbox can be stopped. A trigger that came earlier acts now.
    pub fn arm(&self, stop: Stopper) {
        let mut slot = self.stopper.lock().unwrap_or_else(|e| e.into_inner());
        if self.triggered() {
            stop();
        }
        *slot = Some(stop);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_trigger_before_arming_acts_when_armed() {
        let k = KillSwitch::new();
        let n = Arc::new(AtomicUsize::new(0));
        k.trigger();
        let m = n.clone();
        k.arm(Box::new(move || {
            m.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        k.trigger();
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
