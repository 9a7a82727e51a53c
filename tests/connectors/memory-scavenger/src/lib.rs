//! Looks for what earlier instances left in linear memory, then leaves its
//! own user's rows there for the next one. Before anything else it grows its
//! memory by `GROW` pages and scans every byte for the tag; then it reads the
//! user's rows and sprays `tag tenant;` over `SPRAY` bytes of heap (kept).
//! Every tenant it found comes back smuggled in rows the re-check admits, with
//! one row saying how many bytes it scanned (so a test knows it ran).
// Reading memory it was never given is the attack.
#![allow(unsafe_code)]
use std::collections::BTreeSet;

use silo_sdk::{SqlDialect, Value, sql};

const PAGE: usize = 65536;
/// Pages grown before the scan: what a previous instance grew to must read
/// back as zeros.
const GROW: usize = 160;
/// Bytes of heap sprayed with the user's rows: small for a tenant whose
/// name starts before `m` (the host resets it in place), large for the
/// others (past what the host keeps resident, the rest is decommitted).
const SPRAY: [usize; 2] = [1 << 20, 6 << 20];

/// The tag, assembled at run time so the data segment never holds it.
fn tag() -> Vec<u8> {
    let key = std::hint::black_box(0x5Au8);
    [0x16u8, 0x1f, 0x1c, 0x0e, 0x15, 0x0c, 0x1f, 0x08, 0x60]
        .iter()
        .map(|b| b ^ key)
        .collect()
}

/// Pages of linear memory (only a wasm guest has one; the workspace's
/// host-target builds compile this to nothing).
#[cfg(target_arch = "wasm32")]
fn memory_pages() -> usize {
    core::arch::wasm32::memory_size(0)
}
#[cfg(not(target_arch = "wasm32"))]
fn memory_pages() -> usize {
    0
}

/// Grows linear memory by `pages`.
#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) {
    core::arch::wasm32::memory_grow(0, pages);
}
#[cfg(not(target_arch = "wasm32"))]
fn grow(_pages: usize) {}

/// The byte at `addr` of this instance's linear memory.
fn peek(addr: usize) -> u8 {
    // SAFETY: every address below the memory's size is readable in wasm32;
    // this connector reads memory it does not own on purpose.
    unsafe { std::ptr::read_volatile(addr as *const u8) }
}

/// Every `tag name;` in linear memory, and the bytes scanned.
fn scan(tag: &[u8]) -> (BTreeSet<String>, usize) {
    let size = memory_pages() * PAGE;
    let mut found = BTreeSet::new();
    let mut addr = 1024;
    while addr + tag.len() + 64 < size {
        if peek(addr) == tag[0] && (1..tag.len()).all(|i| peek(addr + i) == tag[i]) {
            let name: Vec<u8> = (addr + tag.len()..addr + tag.len() + 64)
                .map(peek)
                .take_while(|b| *b != b';')
                .collect();
            if !name.is_empty() && name.iter().all(u8::is_ascii_alphanumeric) {
                found.insert(String::from_utf8_lossy(&name).into_owned());
            }
        }
        addr += 1;
    }
    (found, size)
}

silo_guest_common::hostile_connector!(MemoryScavenger, |request| {
    grow(GROW);
    let tag = tag();
    let (found, scanned) = scan(&tag);

    let query = silo_sdk::select(SqlDialect::Postgres, &request)?;
    let rows = silo_sdk::collect_rows(&sql::query(&query.sql, &query.params)?)?;
    let at = request.columns.iter().position(|c| c == "tenant");
    let tenants: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| match at.and_then(|i| r.get(i)) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let size = SPRAY[usize::from(tenants.iter().any(|t| t.as_str() >= "m"))];
    let mut spray = Vec::with_capacity(size);
    while spray.len() < size {
        for t in &tenants {
            spray.extend_from_slice(&tag);
            spray.extend_from_slice(t.as_bytes());
            spray.push(b';');
        }
        if tenants.is_empty() {
            break;
        }
    }
    std::mem::forget(std::hint::black_box(spray));

    let mut seen = vec![format!("scanned {scanned} bytes")];
    seen.extend(found.into_iter().map(|t| format!("found {t}")));
    silo_guest_common::exfiltrate(&request, seen)
});
