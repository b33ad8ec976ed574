//! `reports::render` on a sweep directory: every SVG parses, has one series per design, a
//! gap where a point has no passing run and labelled axes with units; report.md and
//! report.html say what was swept, how to regenerate it, and what the data show.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use reports::manifest::{Axis, MANIFEST_FORMAT, Manifest, Mark, PlotSpec, ReportSpec};
use reports::table::{PointRecord, RunRecord, runs_csv};

const DESIGNS: &[&str] = &["global-lock", "dec-and-lock", "per-2m-rwlock"];
const CPUS: &[u64] = &[1, 2, 4, 8];

fn manifest() -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        name: "designs against CPUs".into(),
        about: Some("A synthetic sweep for the report's tests.".into()),
        sweep_file: "scenarios/sweeps/t.toml".into(),
        base: "scenarios/library/dpamt/t.toml".into(),
        base_name: "t".into(),
        strategy: "random".into(),
        seeds: vec![0, 1],
        axes: vec![
            Axis {
                keys: vec!["host.dpamt".into()],
                values: DESIGNS.iter().map(|d| vec![d.to_string()]).collect(),
            },
            Axis {
                keys: vec!["machine.cpus".into()],
                values: CPUS.iter().map(|c| vec![c.to_string()]).collect(),
            },
        ],
        points: (DESIGNS.len() * CPUS.len()) as u64,
        ghz: Some(2.0),
        outcomes: vec!["pass".into(), "deadlock".into()],
        tool_version: "0.1.0".into(),
        commit: Some("abc1234".into()),
        partition: None,
        report: ReportSpec {
            title: None,
            x: None,
            series: None,
            plots: vec![
                PlotSpec {
                    metric: "lock_contended".into(),
                    per: None,
                    scale: 1.0,
                    title: "contended acquisitions".into(),
                },
                PlotSpec {
                    metric: "lock_wait_cycles".into(),
                    per: None,
                    scale: 1.0,
                    title: "total lock wait".into(),
                },
                PlotSpec {
                    metric: "seamcall_busy".into(),
                    per: Some("seamcalls".into()),
                    scale: 1000.0,
                    title: "BUSY per 1000 SEAMCALLs".into(),
                },
            ],
            marks: vec![Mark {
                metric: "lock_contended".into(),
                series: Some("global-lock".into()),
                x: None,
                y: 100.0,
                label: "published: 100".into(),
            }],
        },
    }
}

/// Contentions per design at `cpus`: global-lock grows fastest; dec-and-lock starts above
/// per-2m-rwlock and ends below it (a clear crossing between 2 and 4); per-2m-rwlock
/// deadlocks at 8 CPUs.
fn contended(design: &str, cpus: u64, seed: u64) -> u64 {
    let base = match design {
        "global-lock" => 30 * cpus * cpus,
        "dec-and-lock" => 20 + 5 * cpus,
        _ => 4 * cpus * cpus,
    };
    base + seed
}

fn records() -> Vec<PointRecord> {
    let mut records = Vec::new();
    for (d, design) in DESIGNS.iter().enumerate() {
        for (c, &cpus) in CPUS.iter().enumerate() {
            let runs = (0..2)
                .map(|seed| {
                    let deadlocks = *design == "per-2m-rwlock" && cpus == 8;
                    let lock = contended(design, cpus, seed);
                    RunRecord {
                        seed,
                        outcome: if deadlocks { "deadlock".into() } else { "pass".into() },
                        finding: if deadlocks { "wait cycle".into() } else { String::new() },
                        metrics: vec![
                            ("seamcalls".into(), 1000 * cpus),
                            ("seamcall_busy".into(), cpus * (d as u64 + 1)),
                            ("lock_contended".into(), lock),
                            ("lock_wait_cycles".into(), lock * 4000),
                        ],
                    }
                })
                .collect();
            records.push(PointRecord {
                point: (d * CPUS.len() + c) as u64,
                values: vec![design.to_string(), cpus.to_string()],
                runs,
            });
        }
    }
    records
}

fn sweep_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tdxsim-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = manifest();
    std::fs::write(dir.join("manifest.json"), manifest.to_json()).unwrap();
    std::fs::write(dir.join("runs.csv"), runs_csv(&manifest, &records())).unwrap();
    dir
}

/// Per series colour: how many data polylines (stroke-width 2) it has.
fn series_lines(svg: &str) -> BTreeMap<String, usize> {
    let document = roxmltree::Document::parse(svg).expect("each SVG parses as XML");
    let mut lines = BTreeMap::new();
    for node in document.descendants().filter(|node| node.has_tag_name("polyline")) {
        let (Some(stroke), Some("2")) = (node.attribute("stroke"), node.attribute("stroke-width")) else {
            continue;
        };
        *lines.entry(stroke.to_string()).or_default() += 1;
    }
    lines
}

fn texts(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).unwrap();
    document
        .descendants()
        .filter(|node| node.has_tag_name("text"))
        .filter_map(|node| node.text())
        .map(|text| text.trim().to_string())
        .collect()
}

fn render(dir: &Path) -> Vec<PathBuf> {
    let rendered = reports::render(dir).unwrap();
    assert!(rendered.skipped.is_empty(), "{:?}", rendered.skipped);
    rendered.files
}

#[test]
fn every_plot_parses_and_has_one_series_per_design() {
    let dir = sweep_dir("series");
    let files = render(&dir);
    let svgs: Vec<&PathBuf> =
        files.iter().filter(|file| file.extension().is_some_and(|ext| ext == "svg")).collect();
    assert_eq!(svgs.len(), 3, "one plot per metric: {files:?}");
    for svg in svgs {
        let text = std::fs::read_to_string(svg).unwrap();
        let lines = series_lines(&text);
        assert_eq!(lines.len(), DESIGNS.len(), "{}: one colour per design: {lines:?}", svg.display());
        let labels = texts(&text);
        for design in DESIGNS {
            assert_eq!(
                labels.iter().filter(|label| label == design).count(),
                1,
                "{design} in the legend of {}",
                svg.display()
            );
        }
        assert!(labels.contains(&"machine.cpus (CPUs, log2 axis)".to_string()), "{labels:?}");
        for tick in ["1", "2", "4", "8"] {
            assert!(labels.contains(&tick.to_string()), "x tick {tick}");
        }
        let y_label =
            labels.iter().find(|label| label.ends_with(')') && !label.starts_with("machine.cpus")).unwrap();
        assert!(
            y_label.ends_with("(count)") || y_label.ends_with("(ms)") || y_label.ends_with("(per run)"),
            "the y axis names its unit: {y_label}"
        );
        // per-2m-rwlock has no passing run at 8 CPUs: its line stops at 4 (legend + one
        // segment, no point at zero), the others have legend + one line.
        let counts: BTreeSet<usize> = lines.values().copied().collect();
        assert_eq!(counts, BTreeSet::from([2]), "{lines:?}");
    }
}

#[test]
fn a_gap_is_not_drawn_as_zero() {
    let dir = sweep_dir("gap");
    render(&dir);
    let svg = std::fs::read_to_string(dir.join("plots/lock-contended.svg")).unwrap();
    let document = roxmltree::Document::parse(&svg).unwrap();
    let pink = reports::plot::colour(2);
    let colour = format!("#{:02X}{:02X}{:02X}", pink.0, pink.1, pink.2);
    let points: Vec<usize> = document
        .descendants()
        .filter(|node| node.has_tag_name("polyline") && node.attribute("stroke") == Some(colour.as_str()))
        .filter(|node| node.attribute("stroke-width") == Some("2"))
        .map(|node| node.attribute("points").unwrap().split_whitespace().count())
        .collect();
    assert!(points.contains(&3), "per-2m-rwlock's line has the three points 1, 2, 4: {points:?}");
    let circles = document
        .descendants()
        .filter(|node| node.has_tag_name("circle") && node.attribute("fill") == Some(colour.as_str()))
        .count();
    assert_eq!(circles, 3, "no marker at 8 CPUs");
}

#[test]
fn the_report_says_what_was_swept_how_to_regenerate_it_and_what_the_data_show() {
    let dir = sweep_dir("text");
    render(&dir);
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let shown = dir.display();
    assert!(
        markdown
            .contains(&format!("tdxsim sweep scenarios/sweeps/t.toml --out {shown}\ntdxsim report {shown}"))
    );
    assert!(markdown.contains("- Base scenario: `scenarios/library/dpamt/t.toml` (t)"));
    assert!(markdown.contains(
        "12 points x 2 seeds per point (0..=1, `random` strategy): 24 runs; outcomes: deadlock 2, pass 22"
    ));
    assert!(markdown.contains("commit `abc1234`"));
    // Computed from the figures: at 8 CPUs (where per-2m-rwlock has no figure) dec-and-lock is
    // lowest; dec-and-lock and per-2m-rwlock swap order between 2 and 4 CPUs.
    assert!(
        markdown.contains("At machine.cpus = 8, dec-and-lock is lowest (60.5) and global-lock highest (1920"),
        "{markdown}"
    );
    assert!(
        markdown.contains("dec-and-lock and per-2m-rwlock cross between 2 and 4 (per-2m-rwlock lower before, dec-and-lock after)"),
        "{markdown}"
    );
    assert!(markdown.contains("No run passed (gaps in the plot): per-2m-rwlock at 8 (deadlock 2)."));
    assert!(markdown.contains("global-lock rises 63x (30.5 to 1920) from 1 to 8"), "{markdown}");
    assert!(markdown.contains("Marked: published: 100 = 100; global-lock here is 1920 at machine.cpus = 8 (19.2x the published figure)."));
    // Times are shown in time units from machine.ghz: 4000 cycles per contention at 2 GHz.
    assert!(markdown.contains("Mean (min–max) over passing runs, in ms:"), "{markdown}");
    assert!(markdown.contains("| 8 | 3.84 (3.84–3.84) | 0.121 (0.12–0.122) |"), "{markdown}");
    // A table per plot, a row per CPU count.
    assert_eq!(markdown.matches("| machine.cpus | global-lock | dec-and-lock | per-2m-rwlock |").count(), 3);
    assert!(markdown.contains("| 8 | 1920 (1920–1921) | 60.5 (60–61) | — (deadlock 2) |"), "{markdown}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3, "the SVGs are inline");
    assert!(!html.contains("src=") && !html.contains("<link") && !html.contains("href="), "self-contained");
    assert!(html.contains("<td>— (deadlock 2)</td>"));
}

#[test]
fn rendering_twice_gives_the_same_bytes() {
    let dir = sweep_dir("twice");
    let first: Vec<Vec<u8>> = render(&dir).iter().map(|file| std::fs::read(file).unwrap()).collect();
    let second: Vec<Vec<u8>> = render(&dir).iter().map(|file| std::fs::read(file).unwrap()).collect();
    assert_eq!(first, second);
}

#[test]
fn a_directory_without_a_sweep_is_refused() {
    let dir = std::env::temp_dir().join(format!("tdxsim-report-{}-empty", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let error = reports::render(&dir).unwrap_err().to_string();
    assert!(error.contains("manifest.json"), "{error}");
}
