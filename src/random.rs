//! Randomness from the operating system's CSPRNG, for salts, tokens and keys.

use rand::rngs::SysRng;
use rand::TryRng;

/// Fills `buf` from the OS CSPRNG.
///
/// The kernel's generator does not fail once the system has booted; if it ever did, carrying
/// on with predictable tokens would be worse than stopping, so this aborts the process.
pub fn fill(buf: &mut [u8]) {
    if let Err(e) = SysRng.try_fill_bytes(buf) {
        eprintln!("latchkeyd: the operating system's random generator failed: {e}");
        std::process::abort();
    }
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    fill(&mut buf);
    buf
}
