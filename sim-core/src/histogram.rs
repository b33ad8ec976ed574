//! `Histogram`: a fixed-size distribution of cycle counts, for percentiles of lock waits and
//! fault latencies.
//!
//! HDR-like buckets: values 0..8 each have their own bucket; above that, every power of two
//! is split into 8 equal sub-buckets, so a bucket's width is at most 1/8 of its lower bound
//! and a percentile read from it is at most 12.5% above the true value. 496 buckets cover
//! all of `u64`. The first 8 values are kept as they are (exact percentiles, no allocation);
//! the bucket array is allocated at the ninth and never again, so recording allocates nothing
//! per event.

/// Values below this have a bucket each.
const EXACT: u64 = 8;
/// Sub-buckets per power of two: 2^SUB_BITS.
const SUB_BITS: u32 = 3;
/// Buckets for all of u64: the exact ones, then 8 per power of two from 2^3 to 2^63.
pub const BUCKETS: usize = EXACT as usize + (64 - SUB_BITS as usize) * (1 << SUB_BITS);

/// Values kept as they are before a histogram needs its buckets.
const INLINE: usize = 8;

/// A distribution of `u64` values (cycles): up to [`INLINE`] values kept exactly, then
/// [`BUCKETS`] fixed buckets. Most locks of a small run are contended a few times, so their
/// histograms never allocate and their percentiles are exact.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// invariant: `Some` exactly when more than INLINE values were recorded; then the counts
    /// sum to `count` and `inline` is unused.
    counts: Option<Box<[u64; BUCKETS]>>,
    /// invariant: while `counts` is `None`, the first `count` entries are the values.
    inline: [u64; INLINE],
    count: u64,
    /// invariant: the largest value recorded (0 when empty).
    max: u64,
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, value: u64) {
        match &mut self.counts {
            Some(counts) => counts[bucket_of(value)] += 1,
            None if (self.count as usize) < INLINE => self.inline[self.count as usize] = value,
            None => {
                let mut counts = Box::new([0; BUCKETS]);
                for &kept in &self.inline {
                    counts[bucket_of(kept)] += 1;
                }
                counts[bucket_of(value)] += 1;
                self.counts = Some(counts);
            }
        }
        self.count += 1;
        self.max = self.max.max(value);
    }

    /// Adds every value of `other` (the distribution of both together).
    pub fn merge(&mut self, other: &Histogram) {
        match &other.counts {
            None => {
                for &value in &other.inline[..other.count as usize] {
                    self.record(value);
                }
            }
            Some(theirs) => {
                if self.counts.is_none() {
                    let mut counts = Box::new([0; BUCKETS]);
                    for &kept in &self.inline[..self.count as usize] {
                        counts[bucket_of(kept)] += 1;
                    }
                    self.counts = Some(counts);
                }
                let ours = self.counts.as_mut().expect("just made");
                for (mine, their) in ours.iter_mut().zip(theirs.iter()) {
                    *mine += their;
                }
                self.count += other.count;
                self.max = self.max.max(other.max);
            }
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded, exactly (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The nearest-rank `quantile` (0.0..=1.0): the ceil(quantile * count)-th smallest value,
    /// exactly while the values are kept inline, else the upper bound of the bucket holding
    /// it but never more than the largest value recorded. 0 when empty.
    pub fn quantile(&self, quantile: f64) -> u64 {
        assert!((0.0..=1.0).contains(&quantile), "a quantile is in 0..=1, got {quantile}");
        if self.count == 0 {
            return 0;
        }
        let rank = ((quantile * self.count as f64).ceil() as u64).clamp(1, self.count);
        let Some(counts) = &self.counts else {
            let mut values = self.inline;
            let values = &mut values[..self.count as usize];
            values.sort_unstable();
            return values[rank as usize - 1];
        };
        let mut seen = 0;
        for (bucket, &in_bucket) in counts.iter().enumerate() {
            seen += in_bucket;
            if seen >= rank {
                return bucket_upper(bucket).min(self.max);
            }
        }
        unreachable!("the bucket counts sum to count, and rank <= count")
    }
}

/// Two histograms are equal when they hold the same values (inline values in any order).
impl PartialEq for Histogram {
    fn eq(&self, other: &Histogram) -> bool {
        if (self.count, self.max) != (other.count, other.max) {
            return false;
        }
        match (&self.counts, &other.counts) {
            (Some(ours), Some(theirs)) => ours == theirs,
            (None, None) => {
                let sorted = |histogram: &Histogram| {
                    let mut values = histogram.inline;
                    values[..histogram.count as usize].sort_unstable();
                    values[..histogram.count as usize].to_vec()
                };
                sorted(self) == sorted(other)
            }
            _ => unreachable!("the mode follows from the count, and the counts are equal"),
        }
    }
}

impl Eq for Histogram {}

/// The bucket `value` falls in.
fn bucket_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let magnitude = 63 - value.leading_zeros(); // >= SUB_BITS
    let sub = (value >> (magnitude - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + ((magnitude - SUB_BITS) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The largest value bucket `bucket` holds.
fn bucket_upper(bucket: usize) -> u64 {
    if bucket < EXACT as usize {
        return bucket as u64;
    }
    let above = bucket - EXACT as usize;
    let shift = (above >> SUB_BITS) as u32;
    let sub = (above & ((1 << SUB_BITS) - 1)) as u64;
    let lower = ((1 << SUB_BITS) + sub) << shift;
    lower + ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_u64_in_order() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(7), 7);
        assert_eq!(bucket_of(8), 8);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_upper(BUCKETS - 1), u64::MAX);
        for bucket in 1..BUCKETS {
            let lower = bucket_upper(bucket - 1) + 1;
            assert_eq!(bucket_of(lower), bucket, "bucket {bucket} starts right after the one before");
            assert_eq!(bucket_of(bucket_upper(bucket)), bucket);
        }
    }

    #[test]
    fn a_bucket_is_at_most_an_eighth_of_its_values_wide() {
        for bucket in EXACT as usize..BUCKETS {
            let lower = bucket_upper(bucket - 1) + 1;
            let width = bucket_upper(bucket) - lower + 1;
            assert!(width <= lower / 8, "bucket {bucket}: width {width}, lower bound {lower}");
        }
    }

    #[test]
    fn quantiles_are_nearest_rank_within_the_bucket_error() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.99), 0);
        for value in 1..=1000u64 {
            histogram.record(value * 100);
        }
        assert_eq!(histogram.count(), 1000);
        assert_eq!(histogram.max(), 100_000);
        // The exact nearest-rank p50 is 50_000 and p99 is 99_000: reported at most 12.5% above.
        let p50 = histogram.quantile(0.5);
        assert!((50_000..=56_250).contains(&p50), "p50 {p50}");
        let p99 = histogram.quantile(0.99);
        assert!((99_000..=100_000).contains(&p99), "p99 {p99} (clamped to the max)");
        assert_eq!(histogram.quantile(1.0), 100_000);
        let p0 = histogram.quantile(0.0);
        assert!((100..=112).contains(&p0), "rank 1 is the smallest value's bucket: {p0}");
    }

    #[test]
    fn a_few_values_are_exact_and_more_go_to_buckets() {
        let mut histogram = Histogram::default();
        for value in [900, 100, 500] {
            histogram.record(value);
        }
        assert_eq!((histogram.quantile(0.5), histogram.quantile(1.0)), (500, 900), "exact while inline");
        assert!(histogram.counts.is_none(), "no allocation for a few values");
        let mut many = Histogram::default();
        for value in 1..=20u64 {
            many.record(value * 1000);
        }
        assert!(many.counts.is_some());
        let mut merged = histogram.clone();
        merged.merge(&many);
        assert_eq!(merged.count(), 23);
        assert_eq!(merged.max(), 20_000);
        let p50 = merged.quantile(0.5);
        assert!((9_000..=10_125).contains(&p50), "the 12th of 23 is 9000, within a bucket: {p50}");
        let mut other_way = many.clone();
        other_way.merge(&histogram);
        assert_eq!(other_way, merged, "merging is the same in either order");
    }

    #[test]
    fn small_values_are_exact_and_merge_adds_distributions() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for value in [1, 2, 3] {
            a.record(value);
        }
        b.record(7);
        a.merge(&b);
        a.merge(&Histogram::default());
        assert_eq!(a.count(), 4);
        assert_eq!(a.quantile(0.5), 2);
        assert_eq!(a.quantile(1.0), 7);
        assert_eq!(a.max(), 7);
    }
}
