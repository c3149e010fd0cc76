use super::*;

const BLOCK: i64 = 5_880_000; // 1,764,000,000 s
const T0: f64 = 1_764_000_000.0;

fn at(seconds: f64) -> f64 {
    T0 + seconds
}

#[test]
fn a_constant_series_is_one_keyframe_and_reads_back_at_every_frame() {
    let frames: Vec<f64> = (0..20).map(|k| at(15.0 * f64::from(k))).collect();
    let rows: Vec<(f64, f64)> = frames.iter().map(|&t| (t, 4.0)).collect();
    let out = compact_series(BLOCK, &frames, &rows, None, false);
    assert_eq!(out.points, [(0, PointValue::Value(4.0))]);
    for &t in &frames {
        assert_eq!(value_at(&out.points, offset_ms(BLOCK, t)), Some(4.0));
    }
}

#[test]
fn a_missed_scrape_stays_a_gap_and_does_not_end_the_run() {
    // The instance did not answer at 30 s: no frame there, so nothing reads a value there.
    let frames = [at(0.0), at(15.0), at(45.0)];
    let rows = [(at(0.0), 1.0), (at(15.0), 1.0), (at(45.0), 1.0)];
    let out = compact_series(BLOCK, &frames, &rows, None, false);
    assert_eq!(out.points.len(), 1);
}

#[test]
fn a_series_missing_from_a_stored_scrape_reads_as_absent_until_it_returns() {
    let frames = [at(0.0), at(15.0), at(30.0), at(45.0)];
    let rows = [(at(0.0), 7.0), (at(45.0), 7.0)];
    let out = compact_series(BLOCK, &frames, &rows, None, false);
    assert_eq!(
        out.points,
        [(0, PointValue::Value(7.0)), (15_000, PointValue::Absent), (45_000, PointValue::Value(7.0))]
    );
    let read: Vec<Option<f64>> = frames.iter().map(|&t| value_at(&out.points, offset_ms(BLOCK, t))).collect();
    assert_eq!(read, [Some(7.0), None, None, Some(7.0)]);
}

#[test]
fn a_series_that_appears_late_reads_nothing_before() {
    let frames = [at(0.0), at(15.0)];
    let out = compact_series(BLOCK, &frames, &[(at(15.0), 2.0)], None, false);
    assert_eq!(out.points, [(15_000, PointValue::Value(2.0))]);
}

#[test]
fn nan_repeats_are_one_point_and_numbers_after_it_are_new_points() {
    let frames = [at(0.0), at(1.0), at(2.0)];
    let rows = [(at(0.0), f64::NAN), (at(1.0), f64::NAN), (at(2.0), 3.0)];
    let out = compact_series(BLOCK, &frames, &rows, None, false);
    assert_eq!(out.points.len(), 2);
    assert_eq!(out.minutes[0].count, 1, "NaN is not counted");
    assert_eq!(out.minutes[0].stats, Some(Stats { sum: 3.0, min: 3.0, max: 3.0, last: 3.0 }));
}

#[test]
fn a_counter_increase_counts_across_the_block_edge_and_through_a_reset() {
    // 100 before the block, then 110, 130 | reset | 5, 25 (one per 15 s, all in minute 0 and 1).
    let frames = [at(0.0), at(15.0), at(30.0), at(45.0), at(60.0)];
    let rows = [(at(0.0), 110.0), (at(15.0), 130.0), (at(30.0), 5.0), (at(45.0), 25.0), (at(60.0), 30.0)];
    let previous = Some(Previous { time: at(-15.0), value: 100.0 });
    let out = compact_series(BLOCK, &frames, &rows, previous, true);
    let first = out.minutes[0].increase.unwrap();
    assert_eq!((first.increase, first.span), (10.0 + 20.0 + 5.0 + 20.0, 60.0));
    let second = out.minutes[1].increase.unwrap();
    assert_eq!((second.increase, second.span), (5.0, 15.0));
    assert_eq!(out.last, Some(Previous { time: at(60.0), value: 30.0 }));
    let block = out.block_bucket(BLOCK).unwrap();
    assert_eq!(block.increase.unwrap().increase, 60.0);
    assert_eq!((block.start, block.count), (T0 as i64, 5));
    assert_eq!(block.stats.unwrap().last, 30.0);
}

#[test]
fn gauges_have_no_increase() {
    let out = compact_series(BLOCK, &[at(0.0), at(1.0)], &[(at(0.0), 1.0), (at(1.0), 0.5)], None, false);
    assert_eq!(out.minutes[0].increase, None);
    assert_eq!(out.minutes[0].stats, Some(Stats { sum: 1.5, min: 0.5, max: 1.0, last: 0.5 }));
}

/// Random series against a brute-force oracle: every frame reads back exactly
/// the value stored (or nothing when absent), and the rollups match.
#[test]
fn every_frame_reads_back_what_was_stored() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2_000 {
        let frame_count = rng.usize(1..60);
        let mut time = at(rng.f64() * 3.0);
        let mut frames = Vec::new();
        for _ in 0..frame_count {
            frames.push((time * 1000.0).round() / 1000.0);
            time += 1.0 + rng.f64() * 5.0;
            if time >= at(300.0) {
                break;
            }
        }
        let palette = [0.0, 1.0, 2.5, f64::NAN, 1e300, -3.0];
        let mut rows: Vec<(f64, f64)> = Vec::new();
        for &t in &frames {
            if rng.u8(0..10) > 1 {
                let pick = if rng.bool() { rng.usize(..2) } else { rng.usize(..palette.len()) };
                rows.push((t, palette[pick]));
            }
        }
        let out = compact_series(BLOCK, &frames, &rows, None, true);
        assert!(out.points.len() <= frames.len());
        for &frame in &frames {
            let expected = rows.iter().find(|(t, _)| *t == frame).map(|(_, v)| *v);
            let got = value_at(&out.points, offset_ms(BLOCK, frame));
            match (expected, got) {
                (Some(e), Some(g)) => assert!(e.to_bits() == g.to_bits() || (e.is_nan() && g.is_nan())),
                (None, None) => {}
                other => panic!("frame {frame}: {other:?} in {rows:?}"),
            }
        }
        let numbers: Vec<(f64, f64)> = rows.iter().copied().filter(|(_, v)| !v.is_nan()).collect();
        let expected_increase: f64 =
            numbers.windows(2).map(|w| if w[1].1 >= w[0].1 { w[1].1 - w[0].1 } else { w[1].1 }).sum();
        let got: f64 = out.minutes.iter().filter_map(|b| b.increase).map(|i| i.increase).sum();
        assert!(
            (got - expected_increase).abs() <= 1e-9 * expected_increase.abs().max(1.0),
            "{got} vs {expected_increase}"
        );
        let counted: u32 = out.minutes.iter().map(|b| b.count).sum();
        assert_eq!(counted as usize, numbers.len());
        // The block writer's shortcut gives the same bucket, bit for bit.
        let previous = rng.bool().then(|| Previous { time: at(-1.0), value: palette[rng.usize(..palette.len())] });
        let out = compact_series(BLOCK, &frames, &rows, previous, true);
        let (bucket, last) = block_rollup(BLOCK, &rows, previous, true);
        assert_eq!(format!("{bucket:?} {last:?}"), format!("{:?} {:?}", out.block_bucket(BLOCK), out.last));
        let out = compact_series(BLOCK, &frames, &rows, None, false);
        let (bucket, last) = block_rollup(BLOCK, &rows, None, false);
        assert_eq!(format!("{bucket:?} {last:?}"), format!("{:?} {:?}", out.block_bucket(BLOCK), out.last));
    }
}
