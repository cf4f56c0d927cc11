//! A small compiler from a seccomp policy (system call number → action, plus a few argument
//! checks) to classic BPF, laid out as a binary search.
//!
//! Why not a general builder: the kernel evaluates a filter on every system call, and when
//! the filter is installed it runs it once per system call number to find the calls it may
//! allow without running it again. A linear chain of ~350 comparisons made that installation
//! cost over a millisecond per sandbox here; a binary search needs about twenty
//! instructions per call. Pure data and portable, so it is unit-tested on every platform
//! with the interpreter below.

use std::collections::BTreeMap;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// The opcode: instruction class, size or operation, and operand source (`0x20` is
    /// `BPF_LD | BPF_W | BPF_ABS`).
    pub code: u16,
    /// For a conditional jump: how many instructions to skip when the condition holds.
    pub jt: u8,
    /// For a conditional jump: how many instructions to skip when it does not.
    pub jf: u8,
    /// The operand: an offset into `struct seccomp_data`, a constant, a jump distance or the
    /// value returned.
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// What the filter returns for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run the call (`SECCOMP_RET_ALLOW`).
    Allow,
    /// Fail the call with this errno, without running it (`SECCOMP_RET_ERRNO`).
    Errno(u16),
    /// Kill the whole process, every thread, as though by `SIGSYS`, without running the call
    /// (`SECCOMP_RET_KILL_PROCESS`, Linux 4.14).
    KillProcess,
    /// Hand the call to the user-space listener (seccomp user notification,
    /// `SECCOMP_RET_USER_NOTIF`, seccomp_unotify(2)).
    UserNotif,
}

impl Action {
    /// The filter's 32-bit return value for this action: the `SECCOMP_RET_*` action in the
    /// high 16 bits and, for [`Action::Errno`], the errno in the low 16 (seccomp(2)).
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => 0x7fff_0000,
            Action::Errno(e) => 0x0005_0000 | u32::from(e),
            Action::KillProcess => 0x8000_0000,
            Action::UserNotif => 0x7fc0_0000,
        }
    }
}

/// Offset in `struct seccomp_data` of `nr`, the system call number (4 bytes).
pub const NR: u32 = 0;
/// Offset in `struct seccomp_data` of `arch`, the caller's `AUDIT_ARCH_*` value (4 bytes).
pub const ARCH: u32 = 4;

/// Offset in `struct seccomp_data` of the low 32 bits of argument `i` (0 to 5): the
/// arguments are 64-bit words from byte 16, and classic BPF loads 32 bits at a time.
pub const fn arg_lo(i: u32) -> u32 {
    if cfg!(target_endian = "little") { 16 + 8 * i } else { 16 + 8 * i + 4 }
}

/// A jump target in the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

/// Assembler statements. Conditional jumps go to a label when the condition holds and fall
/// through otherwise; every one assembles to `jcond k, 0, 1; ja label`, so targets may be any
/// distance ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// Loads the 32-bit word at this offset of `struct seccomp_data` into the accumulator.
    Load(u32),
    /// Masks the accumulator with this constant (bitwise and).
    And(u32),
    /// Jumps to the label when the accumulator equals the constant.
    IfEq(u32, Label),
    /// Jumps to the label when the accumulator is at least the constant (unsigned).
    IfGe(u32, Label),
    /// Jumps to the label when the accumulator has any of the constant's bits set.
    IfSet(u32, Label),
    /// Ends the filter with this action.
    Ret(Action),
    /// Places the label here; assembles to nothing.
    Mark(Label),
}

/// Builds statement lists with fresh labels.
#[derive(Debug, Default)]
pub struct Asm {
    next: usize,
    /// The statements so far, in program order.
    pub out: Vec<Stmt>,
}

impl Asm {
    /// A fresh label, not yet placed: place it with [`Stmt::Mark`] after the jumps to it.
    pub fn label(&mut self) -> Label {
        self.next += 1;
        Label(self.next)
    }

    /// Appends a statement; returns the assembler, so that pushes chain.
    pub fn push(&mut self, s: Stmt) -> &mut Self {
        self.out.push(s);
        self
    }

    /// Appends code that returns the action `entries` gives the number already loaded in the
    /// accumulator, or `default` for a number not in it, by binary search. `entries` must be
    /// sorted by number, without duplicates.
    pub fn search(&mut self, entries: &[(u32, Action)], default: Action) {
        if entries.len() <= 3 {
            let labels: Vec<Label> = entries.iter().map(|_| self.label()).collect();
            for ((nr, _), l) in entries.iter().zip(&labels) {
                self.push(Stmt::IfEq(*nr, *l));
            }
            self.push(Stmt::Ret(default));
            for ((_, act), l) in entries.iter().zip(&labels) {
                self.push(Stmt::Mark(*l)).push(Stmt::Ret(*act));
            }
            return;
        }
        let mid = entries.len() / 2;
        let right = self.label();
        self.push(Stmt::IfGe(entries[mid].0, right));
        self.search(&entries[..mid], default);
        self.push(Stmt::Mark(right));
        self.search(&entries[mid..], default);
    }

    /// Resolves labels into instructions.
    ///
    /// # Errors
    /// A jump to a label never placed, a jump backwards (classic BPF jumps only forwards), or
    /// a program longer than the kernel's 4,096 instructions (`BPF_MAXINSNS`).
    pub fn assemble(&self) -> Result<Vec<Insn>, String> {
        let size = |s: &Stmt| match s {
            Stmt::IfEq(..) | Stmt::IfGe(..) | Stmt::IfSet(..) => 2,
            Stmt::Mark(_) => 0,
            _ => 1,
        };
        let mut at = BTreeMap::new();
        let mut pos = 0usize;
        for s in &self.out {
            if let Stmt::Mark(l) = s {
                at.insert(l.0, pos);
            }
            pos += size(s);
        }
        let mut prog = Vec::with_capacity(pos);
        for s in &self.out {
            let jump = |code: u16, k: u32, l: &Label, prog: &mut Vec<Insn>| -> Result<(), String> {
                prog.push(Insn { code, jt: 0, jf: 1, k });
                let target = *at.get(&l.0).ok_or("jump to an unplaced label")?;
                let from = prog.len() + 1;
                let off = target.checked_sub(from).ok_or("backward jump")?;
                prog.push(Insn { code: JMP_JA, jt: 0, jf: 0, k: off as u32 });
                Ok(())
            };
            match s {
                Stmt::Load(off) => prog.push(Insn { code: LD_W_ABS, jt: 0, jf: 0, k: *off }),
                Stmt::And(m) => prog.push(Insn { code: ALU_AND_K, jt: 0, jf: 0, k: *m }),
                Stmt::IfEq(k, l) => jump(JMP_JEQ_K, *k, l, &mut prog)?,
                Stmt::IfGe(k, l) => jump(JMP_JGE_K, *k, l, &mut prog)?,
                Stmt::IfSet(k, l) => jump(JMP_JSET_K, *k, l, &mut prog)?,
                Stmt::Ret(a) => prog.push(Insn { code: RET_K, jt: 0, jf: 0, k: a.ret() }),
                Stmt::Mark(_) => {}
            }
        }
        if prog.len() > 4096 {
            return Err(format!("filter has {} instructions, the kernel takes at most 4096", prog.len()));
        }
        Ok(prog)
    }
}

/// `struct seccomp_data`, for the interpreter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Data {
    /// The system call number.
    pub nr: i32,
    /// The `AUDIT_ARCH_*` value of the calling convention.
    pub arch: u32,
    /// The six arguments, as 64-bit words. (The instruction pointer, bytes 8 to 15 of the
    /// kernel's struct, is not modelled and reads as zero.)
    pub args: [u64; 6],
}

impl Data {
    fn word(&self, off: u32) -> u32 {
        let mut bytes = [0u8; 64];
        bytes[0..4].copy_from_slice(&self.nr.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.arch.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let o = off as usize;
        u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap_or_default())
    }
}

/// Runs a program the way the kernel does, for tests: returns the action value.
///
/// # Errors
/// Running off the end of the program, or an opcode the assembler never emits.
///
/// # Panics
/// On a load past the end of `struct seccomp_data` (an offset above 60).
pub fn interpret(prog: &[Insn], d: &Data) -> Result<u32, String> {
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog.get(pc).ok_or("ran off the end")?;
        pc += 1;
        match i.code {
            LD_W_ABS => acc = d.word(i.k),
            ALU_AND_K => acc &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            JMP_JGE_K => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
            JMP_JSET_K => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
            RET_K => return Ok(i.k),
            c => return Err(format!("unknown opcode {c:#x}")),
        }
    }
}

/// Whether the kernel's seccomp action cache lets call `nr` of architecture `arch` through
/// without running the filter: the same emulation as `seccomp_is_const_allow` in
/// kernel/seccomp.c (Linux 5.11), run once per number when a filter is installed. The filter
/// is followed with only the number and architecture known; a load of anything else (an
/// argument, the instruction pointer), an opcode outside the emulated set or any result but
/// `SECCOMP_RET_ALLOW` makes the answer "no": the filter then runs on every such call.
pub fn constant_allow(prog: &[Insn], nr: i32, arch: u32) -> bool {
    let (mut pc, mut acc) = (0usize, 0u32);
    while let Some(i) = prog.get(pc) {
        pc += 1;
        match i.code {
            LD_W_ABS => {
                acc = match i.k {
                    0 => nr as u32,
                    4 => arch,
                    _ => return false,
                }
            }
            ALU_AND_K => acc &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            JMP_JGE_K => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
            JMP_JSET_K => pc += usize::from(if acc & i.k != 0 { i.jt } else { i.jf }),
            RET_K => return i.k == Action::Allow.ret(),
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_returns_the_table() {
        let entries: Vec<(u32, Action)> = (0..500)
            .filter(|n| n % 3 != 0)
            .map(|n| (n, if n % 7 == 0 { Action::Errno(1) } else { Action::Allow }))
            .collect();
        let mut a = Asm::default();
        a.push(Stmt::Load(NR));
        a.search(&entries, Action::Errno(38));
        let prog = a.assemble().unwrap();
        for n in 0..600u32 {
            let want = entries.iter().find(|(k, _)| *k == n).map_or(Action::Errno(38), |(_, a)| *a).ret();
            let got = interpret(&prog, &Data { nr: n as i32, ..Data::default() }).unwrap();
            assert_eq!(got, want, "nr {n}");
        }
        // Logarithmic depth: no call walks more than ~40 instructions.
        assert!(prog.len() < 4096);
    }

    #[test]
    fn long_jumps_assemble() {
        let mut a = Asm::default();
        let far = a.label();
        a.push(Stmt::Load(NR)).push(Stmt::IfEq(7, far));
        for _ in 0..1000 {
            a.push(Stmt::And(0xffff_ffff));
        }
        a.push(Stmt::Ret(Action::Allow)).push(Stmt::Mark(far)).push(Stmt::Ret(Action::KillProcess));
        let prog = a.assemble().unwrap();
        assert_eq!(interpret(&prog, &Data { nr: 7, ..Data::default() }).unwrap(), Action::KillProcess.ret());
        assert_eq!(interpret(&prog, &Data { nr: 8, ..Data::default() }).unwrap(), Action::Allow.ret());
    }
}
