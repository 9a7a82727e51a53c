//! Bounded-memory sketches for the profiler: distinct counts (HyperLogLog),
//! quantiles (DDSketch, relative error), and frequent values (SpaceSaving,
//! with a guaranteed lower bound so a value is never reported as more
//! frequent than it is).
use std::collections::HashMap;

/// HyperLogLog precision: 2^12 registers (4 KiB), standard error
/// 1.04 / sqrt(4096) ≈ 1.6%.
const HLL_P: u32 = 12;
const HLL_M: usize = 1 << HLL_P;

/// The relative accuracy of [`Quantiles`]: an estimate is within 1% of the
/// true value at that rank.
pub const QUANTILE_ACCURACY: f64 = 0.01;
/// Most buckets per sign before the lowest are merged (bounds memory; at 1%
/// accuracy 2048 buckets span 18 orders of magnitude).
const MAX_BUCKETS: usize = 2048;

/// Mixes 64 bits (MurmurHash3's finalizer).
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// A 64-bit hash of bytes (FNV-1a, then mixed).
pub fn hash_bytes(tag: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(tag);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

/// Distinct-count estimate in 4 KiB.
#[derive(Clone)]
pub struct Hll {
    registers: Box<[u8; HLL_M]>,
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            registers: Box::new([0; HLL_M]),
        }
    }
}

impl Hll {
    /// Adds a value by its 64-bit hash.
    pub fn add(&mut self, hash: u64) {
        let index = (hash >> (64 - HLL_P)) as usize;
        let rest = (hash << HLL_P) | (1 << (HLL_P - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if let Some(r) = self.registers.get_mut(index)
            && rank > *r
        {
            *r = rank;
        }
    }

    /// The estimated number of distinct values added.
    pub fn estimate(&self) -> u64 {
        let m = HLL_M as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let (mut sum, mut zeros) = (0.0f64, 0u32);
        for r in self.registers.iter() {
            sum += 2f64.powi(-i32::from(*r));
            zeros += u32::from(*r == 0);
        }
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            // Small range: linear counting is exact-ish.
            m * (m / f64::from(zeros)).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        HLL_M
    }
}

/// One sign's buckets: counts by index, densely from `offset`.
#[derive(Clone, Default)]
struct Buckets {
    offset: i32,
    counts: Vec<u64>,
}

impl Buckets {
    fn add(&mut self, index: i32) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0);
        }
        if index < self.offset {
            let grow = (self.offset - index) as usize;
            if self.counts.len() + grow > MAX_BUCKETS {
                // Below the kept range: counts toward the lowest bucket.
                let room = MAX_BUCKETS.saturating_sub(self.counts.len());
                let mut front = vec![0; room];
                front.extend_from_slice(&self.counts);
                self.counts = front;
                self.offset -= room as i32;
                if let Some(c) = self.counts.first_mut() {
                    *c += 1;
                }
                return;
            }
            let mut front = vec![0; grow];
            front.extend_from_slice(&self.counts);
            self.counts = front;
            self.offset = index;
        }
        let at = (index - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
            if self.counts.len() > MAX_BUCKETS {
                // Merge the lowest buckets upward to stay bounded.
                let excess = self.counts.len() - MAX_BUCKETS;
                let merged: u64 = self.counts.drain(..excess).sum();
                self.offset += excess as i32;
                if let Some(c) = self.counts.first_mut() {
                    *c += merged;
                }
            }
        }
        let at = (index - self.offset) as usize;
        if let Some(c) = self.counts.get_mut(at) {
            *c += 1;
        }
    }
}

/// Quantiles with relative error [`QUANTILE_ACCURACY`] in bounded memory
/// (DDSketch).
#[derive(Clone)]
pub struct Quantiles {
    gamma_ln: f64,
    positive: Buckets,
    negative: Buckets,
    zeros: u64,
    count: u64,
}

impl Default for Quantiles {
    fn default() -> Self {
        let gamma = (1.0 + QUANTILE_ACCURACY) / (1.0 - QUANTILE_ACCURACY);
        Quantiles {
            gamma_ln: gamma.ln(),
            positive: Buckets::default(),
            negative: Buckets::default(),
            zeros: 0,
            count: 0,
        }
    }
}

/// Values closer to zero than this count as zero.
const MIN_MAGNITUDE: f64 = 1e-12;

impl Quantiles {
    fn index(&self, magnitude: f64) -> i32 {
        (magnitude.ln() / self.gamma_ln).ceil() as i32
    }

    fn value(&self, index: i32) -> f64 {
        let gamma = self.gamma_ln.exp();
        2.0 * (f64::from(index) * self.gamma_ln).exp() / (gamma + 1.0)
    }

    /// Adds a finite value.
    pub fn add(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        self.count += 1;
        if v.abs() < MIN_MAGNITUDE {
            self.zeros += 1;
        } else if v > 0.0 {
            let i = self.index(v);
            self.positive.add(i);
        } else {
            let i = self.index(-v);
            self.negative.add(i);
        }
    }

    /// The value at quantile `q` (0..=1), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).round() as u64;
        let mut seen = 0u64;
        // Negative values, most negative first.
        for (i, c) in self.negative.counts.iter().enumerate().rev() {
            seen += c;
            if seen > rank {
                return Some(-self.value(self.negative.offset + i as i32));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (i, c) in self.positive.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(self.value(self.positive.offset + i as i32));
            }
        }
        None
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        (self.positive.counts.capacity() + self.negative.counts.capacity()) * 8
    }
}

/// Frequent values (SpaceSaving): at most `capacity` candidates. Each count
/// carries the overestimate it may include, so `count - error` is a floor
/// the true frequency never falls below.
#[derive(Clone)]
pub struct Frequent {
    capacity: usize,
    index: HashMap<String, usize>,
    items: Vec<(String, u64, u64)>,
}

impl Frequent {
    /// Tracks up to `capacity` values.
    pub fn new(capacity: usize) -> Frequent {
        Frequent {
            capacity: capacity.max(1),
            index: HashMap::with_capacity(capacity),
            items: Vec::with_capacity(capacity),
        }
    }

    /// Counts one occurrence of `value`.
    pub fn add(&mut self, value: &str) {
        if let Some(&at) = self.index.get(value) {
            if let Some(item) = self.items.get_mut(at) {
                item.1 += 1;
            }
            return;
        }
        if self.items.len() < self.capacity {
            self.index.insert(value.to_owned(), self.items.len());
            self.items.push((value.to_owned(), 1, 0));
            return;
        }
        // Replace the least counted: the newcomer inherits its count as error.
        let Some((at, _)) = self.items.iter().enumerate().min_by_key(|(_, it)| it.1) else {
            return;
        };
        if let Some(item) = self.items.get_mut(at) {
            self.index.remove(&item.0);
            let floor = item.1;
            *item = (value.to_owned(), floor + 1, floor);
            self.index.insert(value.to_owned(), at);
        }
    }

    /// Values whose guaranteed count is at least `k`, with that count, most
    /// frequent first.
    pub fn at_least(&self, k: u64) -> Vec<(&str, u64)> {
        let mut out: Vec<(&str, u64)> = self
            .items
            .iter()
            .map(|(v, c, e)| (v.as_str(), c - e))
            .filter(|(_, floor)| *floor >= k)
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        out
    }

    /// Heap bytes held (approximately).
    pub fn heap_bytes(&self) -> usize {
        self.items
            .iter()
            .map(|(v, _, _)| 2 * v.capacity() + 64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hll_estimates_within_its_error() {
        for n in [10u64, 1_000, 100_000, 1_000_000] {
            let mut h = Hll::default();
            for i in 0..n {
                h.add(mix64(i));
                h.add(mix64(i)); // duplicates do not count
            }
            let err = (h.estimate() as f64 - n as f64).abs() / n as f64;
            assert!(err < 0.05, "n={n} estimate={} err={err}", h.estimate());
        }
    }

    #[test]
    fn quantiles_are_within_relative_error() {
        let mut q = Quantiles::default();
        let mut exact: Vec<f64> = (1..=100_000)
            .map(|i| f64::from(i) * 0.37 - 5000.0)
            .collect();
        for v in &exact {
            q.add(*v);
        }
        exact.sort_by(f64::total_cmp);
        for p in [0.0, 0.01, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0] {
            let want = exact[(p * (exact.len() - 1) as f64).round() as usize];
            let got = q.quantile(p).unwrap();
            assert!(
                (got - want).abs() <= QUANTILE_ACCURACY * want.abs() + 1e-9,
                "p={p} got {got} want {want}"
            );
        }
        assert!(q.heap_bytes() <= 2 * MAX_BUCKETS * 8);
    }

    #[test]
    fn frequent_never_overstates() {
        let mut f = Frequent::new(4);
        for _ in 0..10 {
            f.add("eu");
        }
        for _ in 0..9 {
            f.add("us");
        }
        for i in 0..100 {
            f.add(&format!("noise-{i}"));
        }
        // Whatever it keeps, a floor is never above the truth.
        for (v, floor) in f.at_least(1) {
            let truth = match v {
                "eu" => 10,
                "us" => 9,
                _ => 1,
            };
            assert!(floor <= truth, "{v}: {floor} > {truth}");
        }
        let mut g = Frequent::new(8);
        for _ in 0..10 {
            g.add("eu");
        }
        for _ in 0..9 {
            g.add("us");
        }
        assert_eq!(g.at_least(10), vec![("eu", 10)]);
        assert_eq!(g.at_least(9), vec![("eu", 10), ("us", 9)]);
    }
}
