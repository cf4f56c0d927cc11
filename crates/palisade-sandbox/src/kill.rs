//! The kill switch: how a monitor rule's `kill` (or anything else) stops a running sandbox,
//! whatever the platform.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What stopping a sandbox takes on one platform (Linux: a write to the supervisor's eventfd,
/// which then kills the sandbox's init; Windows: `TerminateJobObject`). Called from any
/// thread, possibly more than once; it must return quickly.
pub type Stopper = Box<dyn Fn() + Send + Sync>;

/// Stops a running sandbox from any thread. Made by the session before the sandbox exists
/// (the monitor holds it from the start); the backend [arms](KillSwitch::arm) it with its
/// own way to stop once it has one. A trigger before that is kept and acted on when armed.
#[derive(Default)]
pub struct KillSwitch {
    triggered: AtomicBool,
    stopper: Mutex<Option<Arc<Stopper>>>,
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
        // Called outside the lock: a stopper may itself trigger, or take its time.
        let stop = self.stopper.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(stop) = stop {
            stop();
        }
    }

    /// Whether [`KillSwitch::trigger`] was called.
    pub fn triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Gives the switch the backend's way to stop; called by the backend as soon as the
    /// sandbox can be stopped. A trigger that came earlier acts now. (No trigger is lost:
    /// `trigger` sets its flag before it looks for a stopper, and `arm` stores the stopper
    /// before it looks at the flag; at worst both call it.)
    pub fn arm(&self, stop: Stopper) {
        let stop = Arc::new(stop);
        *self.stopper.lock().unwrap_or_else(|e| e.into_inner()) = Some(stop.clone());
        if self.triggered() {
            stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_stopper_that_triggers_again_does_not_deadlock() {
        let k = KillSwitch::new();
        let again = Arc::downgrade(&k);
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        k.arm(Box::new(move || {
            if m.fetch_add(1, Ordering::SeqCst) == 0
                && let Some(k) = again.upgrade()
            {
                k.trigger();
            }
        }));
        k.trigger();
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }

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
