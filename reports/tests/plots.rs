//! `reports::render` on a sweep directory: every SVG parses, has one series per design, a
//! gap where a point has no passing run and labelled axes with units; report.md and
//! report.html say what was swept, how to regenerate it, and what the data show.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

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
                panel: BTreeMap::new(),
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

/// A fresh directory under the system temp dir, removed with what is in it when dropped.
fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("tdxsim-report-{name}-")).tempdir().unwrap()
}

/// A scratch directory (removed when dropped) holding a sweep's files.
fn sweep_dir(name: &str) -> TempDir {
    let dir = scratch(name);
    let manifest = manifest();
    std::fs::write(dir.path().join("manifest.json"), manifest.to_json()).unwrap();
    std::fs::write(dir.path().join("runs.csv"), runs_csv(&manifest, &records())).unwrap();
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
    let scratch = sweep_dir("series");
    let dir = scratch.path();
    let files = render(dir);
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
    let scratch = sweep_dir("gap");
    let dir = scratch.path();
    render(dir);
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
    let scratch = sweep_dir("text");
    let dir = scratch.path();
    render(dir);
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
    let scratch = sweep_dir("twice");
    let dir = scratch.path();
    let first: Vec<Vec<u8>> = render(dir).iter().map(|file| std::fs::read(file).unwrap()).collect();
    let second: Vec<Vec<u8>> = render(dir).iter().map(|file| std::fs::read(file).unwrap()).collect();
    assert_eq!(first, second);
}

#[test]
fn a_directory_without_a_sweep_is_refused() {
    let scratch = scratch("empty");
    let dir = scratch.path();
    let error = reports::render(dir).unwrap_err().to_string();
    assert!(error.contains("manifest.json"), "{error}");
}

/// The grey of published figures (plot.rs draws every reference in it).
const MARK_GREY: &str = "#5A5A5A";

/// How many elements are drawn in the marks' grey, and whether `label` is a text.
fn mark_in(svg: &str, label: &str) -> (usize, bool) {
    let document = roxmltree::Document::parse(svg).unwrap();
    let grey = document
        .descendants()
        .filter(|node| {
            node.attribute("stroke") == Some(MARK_GREY) || node.attribute("fill") == Some(MARK_GREY)
        })
        .filter(|node| !node.has_tag_name("text"))
        .count();
    (grey, texts(svg).iter().any(|text| text == label))
}

#[test]
fn a_published_figure_is_drawn_with_its_label_and_listed_in_the_report() {
    let scratch = sweep_dir("mark");
    let dir = scratch.path();
    render(dir);
    let svg = std::fs::read_to_string(dir.join("plots/lock-contended.svg")).unwrap();
    let (grey, labelled) = mark_in(&svg, "published: 100");
    assert!(grey > 0 && labelled, "the dashed line at 100 and its label: {grey} grey elements");
    // The dashed line is at y = 100 on a 0..1920*1.1*1.08 axis: every grey segment has one y.
    let document = roxmltree::Document::parse(&svg).unwrap();
    let ys: BTreeSet<String> = document
        .descendants()
        .filter(|node| node.has_tag_name("polyline") && node.attribute("stroke") == Some(MARK_GREY))
        .flat_map(|node| {
            node.attribute("points")
                .unwrap()
                .split_whitespace()
                .map(|p| p.split(',').nth(1).unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ys.len(), 1, "a horizontal line: {ys:?}");
    // The other metrics' plots have no mark.
    let other = std::fs::read_to_string(dir.join("plots/lock-wait-cycles.svg")).unwrap();
    assert_eq!(mark_in(&other, "published: 100"), (0, false));
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        markdown.contains("## Published figures marked\n\n- published: 100: `lock_contended` = 100, measured on global-lock; drawn on: contended acquisitions\n"),
        "{markdown}"
    );
}

/// A sweep with a third axis (a panel per workload) and a mark at (x, y) on one panel only.
#[test]
fn a_mark_with_a_panel_is_drawn_on_that_panel_only() {
    let scratch = scratch("panel");
    let dir = scratch.path();
    let mut manifest = manifest();
    let workloads = ["td_boot", "fault_storm"];
    manifest.axes.insert(
        1,
        Axis {
            keys: vec!["workload.0.kind".into()],
            values: workloads.iter().map(|w| vec![w.to_string()]).collect(),
        },
    );
    manifest.points *= 2;
    manifest.report.marks = vec![Mark {
        metric: "lock_contended".into(),
        series: Some("global-lock".into()),
        x: Some(4.0),
        y: 500.0,
        label: "v2 boot: 500".into(),
        panel: BTreeMap::from([("workload.0.kind".to_string(), "td_boot".to_string())]),
    }];
    let mut records = Vec::new();
    for (d, design) in DESIGNS.iter().enumerate() {
        for w in 0..workloads.len() {
            for (c, &cpus) in CPUS.iter().enumerate() {
                let runs = (0..2)
                    .map(|seed| RunRecord {
                        seed,
                        outcome: "pass".into(),
                        finding: String::new(),
                        metrics: vec![
                            ("seamcalls".into(), 1000 * cpus),
                            ("seamcall_busy".into(), cpus),
                            ("lock_contended".into(), contended(design, cpus, seed) * (w as u64 + 1)),
                            ("lock_wait_cycles".into(), 4000 * cpus),
                        ],
                    })
                    .collect();
                records.push(PointRecord {
                    point: ((d * workloads.len() + w) * CPUS.len() + c) as u64,
                    values: vec![design.to_string(), workloads[w].to_string(), cpus.to_string()],
                    runs,
                });
            }
        }
    }
    std::fs::write(dir.join("manifest.json"), manifest.to_json()).unwrap();
    std::fs::write(dir.join("runs.csv"), runs_csv(&manifest, &records)).unwrap();
    render(dir);
    let boot = std::fs::read_to_string(dir.join("plots/lock-contended-workload-0-kind-td-boot.svg")).unwrap();
    let storm =
        std::fs::read_to_string(dir.join("plots/lock-contended-workload-0-kind-fault-storm.svg")).unwrap();
    let (grey, labelled) = mark_in(&boot, "v2 boot: 500");
    assert!(grey > 0 && labelled, "a cross and its label on the td_boot panel");
    assert!(
        roxmltree::Document::parse(&boot)
            .unwrap()
            .descendants()
            .any(|node| node.has_tag_name("line") || node.has_tag_name("polyline")),
    );
    assert_eq!(mark_in(&storm, "v2 boot: 500"), (0, false), "not on the fault_storm panel");
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        markdown.contains("- v2 boot: 500: `lock_contended` = 500 at machine.cpus = 4, measured on global-lock; drawn on: contended acquisitions (workload.0.kind = td_boot)\n"),
        "{markdown}"
    );
    // The comparison sentence is under the td_boot plot only: global-lock at 4 CPUs is 480.5.
    assert_eq!(
        markdown.matches("Marked: v2 boot: 500 = 500; global-lock here is 480 at machine.cpus = 4").count(),
        1,
        "{markdown}"
    );
}
