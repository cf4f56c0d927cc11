/* A stand-in bcryptprimitives.dll for Wine 8, which lacks it: Rust's standard library
 * (1.78 and later) asks it for ProcessPrng to seed HashMap and the like, and a program
 * that imports a missing DLL does not start. Used only to run the Windows test binaries
 * under Wine in CI (`.ci/wine-tests`); never shipped, never on a real Windows machine.
 * ProcessPrng fills the buffer from RtlGenRandom (advapi32's SystemFunction036). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
