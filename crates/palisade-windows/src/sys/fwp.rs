//! Windows Filtering Platform: a dynamic session that holds one run's filters
//! ([`crate::plan::network`]) and removes them when it closes ("Dynamic sessions",
//! `FWPM_SESSION_FLAG_DYNAMIC`, Win32 docs: objects added in one are deleted when the session
//! ends, which the base filtering engine also does when the process holding it dies).
//!
//! The functions are loaded from System32's `fwpuclnt.dll` at run time, as the AppContainer
//! functions are, so the binary starts where they are missing. Mullvad's `wfp` crate (0.2)
//! was considered first: it has no package-id or address conditions and no way to clear the
//! action right, which the plan needs, so the calls are made here.

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::*;
use windows_sys::Win32::Security::SID;
use windows_sys::core::GUID;

use super::appcontainer::OwnedSid;
use super::handle::{SystemFunction, random_u128, system_function, wide};
use crate::plan::network::{Action, Condition, Layer, NetworkPlan};

type Open =
    unsafe extern "system" fn(*const u16, u32, *const core::ffi::c_void, *const FWPM_SESSION0, *mut HANDLE) -> u32;
type Close = unsafe extern "system" fn(HANDLE) -> u32;
type Txn = unsafe extern "system" fn(HANDLE) -> u32;
type TxnBegin = unsafe extern "system" fn(HANDLE, u32) -> u32;
type SubLayerAdd = unsafe extern "system" fn(HANDLE, *const FWPM_SUBLAYER0, *const core::ffi::c_void) -> u32;
type FilterAdd = unsafe extern "system" fn(HANDLE, *const FWPM_FILTER0, *const core::ffi::c_void, *mut u64) -> u32;

/// `RPC_C_AUTHN_DEFAULT`.
const AUTHN_DEFAULT: u32 = 0xFFFF_FFFF;

/// The weight of Palisade's sublayers: the highest, so they are evaluated first.
const SUBLAYER_WEIGHT: u16 = 0xFFFF;

/// The functions, from System32.
#[derive(Clone, Copy)]
struct Api {
    open: Open,
    close: Close,
    begin: TxnBegin,
    commit: Txn,
    abort: Txn,
    sublayer: SubLayerAdd,
    filter: FilterAdd,
}

impl Api {
    fn load() -> io::Result<Api> {
        let find = |name: &str| system_function("fwpuclnt.dll", name);
        type Any = SystemFunction;
        // SAFETY: each pointer is the named function, whose documented prototype is the type
        // it is transmuted to.
        unsafe {
            Ok(Api {
                open: std::mem::transmute::<Any, Open>(find("FwpmEngineOpen0")?),
                close: std::mem::transmute::<Any, Close>(find("FwpmEngineClose0")?),
                begin: std::mem::transmute::<Any, TxnBegin>(find("FwpmTransactionBegin0")?),
                commit: std::mem::transmute::<Any, Txn>(find("FwpmTransactionCommit0")?),
                abort: std::mem::transmute::<Any, Txn>(find("FwpmTransactionAbort0")?),
                sublayer: std::mem::transmute::<Any, SubLayerAdd>(find("FwpmSubLayerAdd0")?),
                filter: std::mem::transmute::<Any, FilterAdd>(find("FwpmFilterAdd0")?),
            })
        }
    }
}

/// A dynamic session with the base filtering engine; what was added through it goes when it
/// is dropped.
pub struct Session {
    api: Api,
    engine: HANDLE,
}

// SAFETY: the engine handle may be used and closed from any thread (an RPC binding).
unsafe impl Send for Session {}

fn check(code: u32, step: &str) -> io::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        let e = io::Error::from_raw_os_error(code as i32);
        Err(io::Error::new(e.kind(), format!("{step}: {e} (0x{code:08X})")))
    }
}

impl Session {
    /// Opens a dynamic session (an administrator's or the service's token is needed).
    ///
    /// # Errors
    /// `fwpuclnt.dll` or a function is missing; the engine refuses (access denied without
    /// administrator rights).
    pub fn open() -> io::Result<Session> {
        let api = Api::load()?;
        // SAFETY: an all-zero FWPM_SESSION0 is a valid default; only the flags are set.
        let mut session: FWPM_SESSION0 = unsafe { std::mem::zeroed() };
        session.flags = FWPM_SESSION_FLAG_DYNAMIC;
        let mut engine: HANDLE = null_mut();
        // SAFETY: the local engine, default authentication, a valid session, an out-pointer.
        let code = unsafe { (api.open)(null(), AUTHN_DEFAULT, null(), &session, &mut engine) };
        check(code, "opening the filter engine")?;
        Ok(Session { api, engine })
    }

    /// Adds the plan's filters in a sublayer of their own (a fresh key, weight 0xFFFF), in one
    /// transaction: all or none. Returns how many filters were added.
    ///
    /// # Errors
    /// A SID that does not parse, or the engine's error, with the filter it was adding.
    pub fn apply(&self, plan: &NetworkPlan) -> io::Result<usize> {
        // SAFETY: a valid engine handle.
        check(unsafe { (self.api.begin)(self.engine, 0) }, "beginning a filter transaction")?;
        match self.add_all(plan) {
            Ok(n) => {
                // SAFETY: as above.
                check(unsafe { (self.api.commit)(self.engine) }, "committing the filters")?;
                Ok(n)
            }
            Err(e) => {
                // SAFETY: as above.
                unsafe { (self.api.abort)(self.engine) };
                Err(e)
            }
        }
    }

    fn add_all(&self, plan: &NetworkPlan) -> io::Result<usize> {
        // A key no other sublayer has.
        let sublayer_key = GUID::from_u128(random_u128());
        let name = wide("Palisade: one run's network");
        // SAFETY: an all-zero FWPM_SUBLAYER0 is valid; the fields that matter are set.
        let mut sublayer: FWPM_SUBLAYER0 = unsafe { std::mem::zeroed() };
        sublayer.subLayerKey = sublayer_key;
        sublayer.displayData.name = name.as_ptr().cast_mut();
        sublayer.weight = SUBLAYER_WEIGHT;
        // SAFETY: a valid engine and sublayer; `name` outlives the call.
        check(unsafe { (self.api.sublayer)(self.engine, &sublayer, null()) }, "adding Palisade's sublayer")?;
        for f in &plan.filters {
            let sids: Vec<OwnedSid> = f
                .conditions
                .iter()
                .filter_map(|c| match c {
                    Condition::PackageId(s) => Some(OwnedSid::parse(&s.0)),
                    _ => None,
                })
                .collect::<io::Result<_>>()?;
            let mut sid_iter = sids.iter();
            let conditions: Vec<FWPM_FILTER_CONDITION0> = f
                .conditions
                .iter()
                .map(|c| {
                    // SAFETY: an all-zero condition is valid; the fields are set below.
                    let mut fc: FWPM_FILTER_CONDITION0 = unsafe { std::mem::zeroed() };
                    fc.matchType = FWP_MATCH_EQUAL;
                    match c {
                        Condition::PackageId(_) => {
                            fc.fieldKey = FWPM_CONDITION_ALE_PACKAGE_ID;
                            fc.conditionValue.r#type = FWP_SID;
                            fc.conditionValue.Anonymous.sid =
                                sid_iter.next().map_or(null_mut(), |s| s.as_psid().cast::<SID>());
                        }
                        Condition::Protocol(p) => {
                            fc.fieldKey = FWPM_CONDITION_IP_PROTOCOL;
                            fc.conditionValue.r#type = FWP_UINT8;
                            fc.conditionValue.Anonymous.uint8 = *p;
                        }
                        Condition::RemoteAddress(std::net::IpAddr::V4(a)) => {
                            // FWP_UINT32 in host order for IPv4 layers.
                            fc.fieldKey = FWPM_CONDITION_IP_REMOTE_ADDRESS;
                            fc.conditionValue.r#type = FWP_UINT32;
                            fc.conditionValue.Anonymous.uint32 = u32::from(*a);
                        }
                        Condition::RemoteAddress(std::net::IpAddr::V6(_)) => {
                            unreachable!("the plan permits IPv4 loopback only")
                        }
                        Condition::RemotePort(p) => {
                            fc.fieldKey = FWPM_CONDITION_IP_REMOTE_PORT;
                            fc.conditionValue.r#type = FWP_UINT16;
                            fc.conditionValue.Anonymous.uint16 = *p;
                        }
                    }
                    fc
                })
                .collect();
            let fname = wide(&f.name);
            // SAFETY: an all-zero FWPM_FILTER0 is valid; the fields that matter are set.
            let mut filter: FWPM_FILTER0 = unsafe { std::mem::zeroed() };
            filter.displayData.name = fname.as_ptr().cast_mut();
            filter.flags = if f.hard { FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT } else { 0 };
            filter.layerKey = layer_key(f.layer);
            filter.subLayerKey = sublayer_key;
            filter.weight.r#type = FWP_UINT8;
            filter.weight.Anonymous.uint8 = f.weight;
            filter.numFilterConditions = conditions.len() as u32;
            filter.filterCondition = conditions.as_ptr().cast_mut();
            filter.action.r#type = match f.action {
                Action::Permit => FWP_ACTION_PERMIT,
                Action::Block => FWP_ACTION_BLOCK,
            };
            let mut id = 0u64;
            // SAFETY: a valid engine and filter; the conditions, SIDs and name it points to
            // live until the call returns.
            check(unsafe { (self.api.filter)(self.engine, &filter, null(), &mut id) }, &format!("adding {}", f.name))?;
        }
        Ok(plan.filters.len())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the handle is owned and closed once; the dynamic session's objects go with it.
        unsafe { (self.api.close)(self.engine) };
    }
}

fn layer_key(layer: Layer) -> GUID {
    match layer {
        Layer::AleAuthConnectV4 => FWPM_LAYER_ALE_AUTH_CONNECT_V4,
        Layer::AleAuthConnectV6 => FWPM_LAYER_ALE_AUTH_CONNECT_V6,
        Layer::AleAuthRecvAcceptV4 => FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V4,
        Layer::AleAuthRecvAcceptV6 => FWPM_LAYER_ALE_AUTH_RECV_ACCEPT_V6,
    }
}
