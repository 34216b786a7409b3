//! The contract tools on a corpus of changes to one baseline tree (`tests/contract/base/`;
//! `tests/contract/cases/<case>/after/`, one per breaking rule and per change that must not be
//! reported, with a `before/` of its own where the change needs another starting point) and of
//! lint trees (`tests/contract/check/`), with the rendered output snapshotted; and through the
//! binary, in each output format.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use keyway_codegen::contract::{self, BreakingOptions, CheckOptions, Severity};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract")
}

fn compile(dir: &Path) -> keyway_codegen::Compiled {
    let sources = keyway_codegen::read_tree(&[dir]).unwrap();
    keyway_codegen::compile_sources(&sources).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn expected(dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dir.join("expect"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn cases(kind: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(root().join(kind))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), e.path())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn breaking_rules_on_the_corpus() {
    let cases = cases("cases");
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, dir) in cases {
        let options = BreakingOptions {
            removed_field: if name.ends_with("-as-warning") {
                Severity::Warning
            } else {
                Severity::Error
            },
            ..BreakingOptions::default()
        };
        // A case whose change needs another starting point brings its own `before/`.
        let before = if dir.join("before").is_dir() {
            dir.join("before")
        } else {
            root().join("base")
        };
        let findings =
            contract::breaking(&compile(&before), &compile(&dir.join("after")), &options);
        let rules: BTreeSet<String> = findings.iter().map(|f| f.rule.to_owned()).collect();
        if rules != expected(&dir) {
            failures.push(format!(
                "{name}: expected {:?}, found {rules:?}",
                expected(&dir)
            ));
        }
        let errors = findings.iter().any(|f| f.severity == Severity::Error);
        let expect_errors = name.starts_with("break-") && !name.ends_with("-as-warning");
        if errors != expect_errors {
            failures.push(format!("{name}: errors = {errors}"));
        }
        let rendered: Vec<String> = findings.iter().map(|f| f.render()).collect();
        insta::assert_snapshot!(format!("breaking__{name}"), rendered.join("\n"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_rules_on_the_corpus() {
    let mut failures = Vec::new();
    for (name, dir) in cases("check") {
        let config = dir.join("keyway.toml");
        let mut options = CheckOptions::default();
        if config.exists() {
            let text = std::fs::read_to_string(&config).unwrap();
            let keys = text
                .lines()
                .enumerate()
                .filter_map(|(n, l)| {
                    l.split_once('=')
                        .map(|(k, _)| (k.trim().to_owned(), Some(n + 1)))
                })
                .collect();
            options.configured = Some(("keyway.toml".to_owned(), keys));
        }
        let findings = contract::check(&compile(&dir.join("tree")), &options);
        let rules: BTreeSet<String> = findings.iter().map(|f| f.rule.to_owned()).collect();
        if rules != expected(&dir) {
            failures.push(format!(
                "{name}: expected {:?}, found {rules:?}",
                expected(&dir)
            ));
        }
        let rendered: Vec<String> = findings.iter().map(|f| f.render()).collect();
        insta::assert_snapshot!(format!("check__{name}"), rendered.join("\n"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn keyway(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn exit_codes_and_formats_through_the_binary() {
    let case = root().join("cases/break-field-removed");
    let out = keyway(
        &[
            "contract",
            "breaking",
            "-I",
            "after",
            "--against",
            "../../base",
        ],
        &case,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "error: [field-removed] field `quantity` (2, key \"quantity\") of `acme.orders.v1.OrderPlaced` is gone"
        ),
        "{text}"
    );
    assert!(text.ends_with("1 error(s), 0 warning(s)\n"), "{text}");

    let out = keyway(
        &[
            "contract",
            "breaking",
            "-I",
            "after",
            "--against",
            "../../base",
            "--format",
            "json",
        ],
        &case,
    );
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.starts_with("{\"findings\":[{\"rule\":\"field-removed\",\"severity\":\"error\""),
        "{json}"
    );
    assert!(
        json.contains("\"old_file\":\"acme/orders/v1/orders.proto\",\"old_line\":12"),
        "{json}"
    );
    assert!(
        json.trim_end().ends_with("\"errors\":1,\"warnings\":0}"),
        "{json}"
    );

    let warn = root().join("cases/warn-enum-value-added");
    let out = keyway(
        &[
            "contract",
            "breaking",
            "-I",
            "after",
            "--against",
            "../../base",
        ],
        &warn,
    );
    assert_eq!(out.status.code(), Some(0), "warnings do not fail");

    let out = breaking_in("break-field-removed", "human");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        text,
        "`human` is another name for `text`"
    );

    let out = keyway(&["contract", "breaking", "-I", "after"], &case);
    assert_eq!(out.status.code(), Some(2), "--against is required");
    let out = keyway(&["contract", "check", "-I", "nowhere"], &case);
    assert_eq!(out.status.code(), Some(2));

    let bad = root().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("broken.proto"),
        "syntax = \"proto3\";\nmessage A {\n  Missing m = 1;\n}\n",
    )
    .unwrap();
    let out = keyway(&["contract", "check", "-I", "."], &bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.proto:3:3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&bad).unwrap();
}

fn breaking_in(case: &str, format: &str) -> std::process::Output {
    keyway(
        &[
            "contract",
            "breaking",
            "-I",
            "after",
            "--against",
            "../../base",
            "--format",
            format,
        ],
        &root().join("cases").join(case),
    )
}

#[test]
fn github_annotations_through_the_binary() {
    let out = breaking_in("break-field-removed", "github");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "::error file=after/acme/orders/v1/orders.proto,line=8,col=1,title=keyway field-removed::\
         field `quantity` (2, key \"quantity\") of `acme.orders.v1.OrderPlaced` is gone: new \
         readers drop the key old writers send, and old readers get its default from every new \
         writer%0Akeep the field (deprecated) until no reader needs it (baseline: \
         ../../base/acme/orders/v1/orders.proto:12:3)\n"
    );

    let out = breaking_in("warn-int32-to-sint32", "github");
    assert_eq!(out.status.code(), Some(0), "warnings do not fail");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(
            "::warning file=after/acme/orders/v1/orders.proto,line=12,col=3,title=keyway binary-type-changed::"
        ),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");

    // A finding with no place in the new tree points at the baseline.
    let out = breaking_in("break-topic-key-removed", "github");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "::error file=../../base/acme/orders/v1/orders.proto,line=9,col=3,title=keyway topic-key-removed::\
         topic key \"order-placed\" (was bound to `acme.orders.v1.OrderPlaced`) is no longer bound%0A\
         keep the key bound: producers and consumers of it would lose their contract (the place \
         shown is in the baseline)\n"
    );
}

fn sarif(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn sarif_logs_through_the_binary() {
    let out = breaking_in("break-field-removed", "sarif");
    assert_eq!(out.status.code(), Some(1));
    let log = sarif(&out);
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &log["runs"][0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "keyway");
    let rules: Vec<&str> = driver["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = contract::BREAKING_RULES.iter().map(|r| r.id).collect();
    assert_eq!(rules, expected);
    for rule in driver["rules"].as_array().unwrap() {
        assert!(!rule["shortDescription"]["text"]
            .as_str()
            .unwrap()
            .is_empty());
        let level = rule["defaultConfiguration"]["level"].as_str().unwrap();
        assert!(level == "error" || level == "warning", "{rule}");
    }
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r["ruleId"], "field-removed");
    assert_eq!(r["level"], "error");
    let index = r["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[index], "field-removed");
    assert!(r["message"]["text"].as_str().unwrap().starts_with(
        "field `quantity` (2, key \"quantity\") of `acme.orders.v1.OrderPlaced` is gone"
    ));
    let place = &r["locations"][0]["physicalLocation"];
    assert_eq!(
        place["artifactLocation"]["uri"],
        "after/acme/orders/v1/orders.proto"
    );
    assert_eq!(place["region"]["startLine"], 8);
    assert_eq!(place["region"]["startColumn"], 1);
    assert_eq!(place["region"]["endColumn"], 2);
    let old = &r["relatedLocations"][0]["physicalLocation"];
    assert_eq!(
        old["artifactLocation"]["uri"],
        "../../base/acme/orders/v1/orders.proto"
    );
    assert_eq!(old["region"]["startLine"], 12);
    assert_eq!(old["region"]["startColumn"], 3);
    assert_eq!(old["region"]["endColumn"], 3 + "int32 quantity = 2;".len());

    // Code scanning wants a location on every result: the baseline's when the new tree has none.
    let log = sarif(&breaking_in("break-payload-removed", "sarif"));
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "../../base/acme/orders/v1/orders.proto",
            "{r}"
        );
    }

    let out = breaking_in("ok-unchanged", "sarif");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sarif(&out)["runs"][0]["results"], serde_json::json!([]));

    // The lint's rules and findings, with the config file's place as given.
    let dir = root().join("check/config-drift");
    let out = keyway(
        &[
            "contract",
            "check",
            "-I",
            "tree",
            "--config",
            "keyway.toml",
            "--format",
            "sarif",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(1));
    let log = sarif(&out);
    let run = &log["runs"][0];
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = contract::CHECK_RULES.iter().map(|r| r.id).collect();
    assert_eq!(rules, expected);
    let uris: BTreeSet<&str> = run["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(uris.contains("keyway.toml"), "{uris:?}");
}

#[test]
fn descriptor_and_topics_through_the_binary() {
    let dir = root().join("check/config-in-sync");
    let out_file =
        std::env::temp_dir().join(format!("keyway-descriptor-{}.bin", std::process::id()));
    let out = keyway(
        &[
            "contract",
            "descriptor",
            "-I",
            "tree",
            "-o",
            out_file.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(out.status.success());
    let pool = prost_reflect::DescriptorPool::decode(std::fs::read(&out_file).unwrap().as_slice())
        .unwrap();
    std::fs::remove_file(&out_file).unwrap();
    let m = pool
        .get_message_by_name("acme.orders.v1.OrderPlaced")
        .unwrap();
    let ext = pool.get_extension_by_name("acme.queue.topic_keys").unwrap();
    assert!(m.options().has_extension(&ext), "custom options kept");

    let out = keyway(
        &[
            "contract",
            "topics",
            "-I",
            "tree",
            "--config",
            "keyway.toml",
            "--format",
            "json",
        ],
        &dir,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[{\"key\":\"order-placed\",\"message\":\"acme.orders.v1.OrderPlaced\",\"stream\":\"orders-v1\"}]"
    );
}

#[test]
fn gen_writes_each_languages_registry_and_the_descriptor_set() {
    let dir = root().join("check/config-in-sync");
    for (lang, file, key_form) in [
        ("python", "topics.py", "\"order-placed\""),
        ("typescript", "topics.ts", "\"order-placed\""),
    ] {
        let out_dir =
            std::env::temp_dir().join(format!("keyway-gen-{lang}-{}", std::process::id()));
        let out = keyway(
            &[
                "contract",
                "gen",
                "-I",
                "tree",
                "--lang",
                lang,
                "--out",
                out_dir.to_str().unwrap(),
            ],
            &dir,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let registry = std::fs::read_to_string(out_dir.join(file)).unwrap();
        assert!(registry.contains(key_form), "{registry}");
        assert!(registry.contains("OrderPlaced"), "{registry}");
        let set = std::fs::read(out_dir.join("descriptor_set.binpb")).unwrap();
        let pool = prost_reflect::DescriptorPool::decode(set.as_slice()).unwrap();
        assert!(pool
            .get_message_by_name("acme.orders.v1.OrderPlaced")
            .is_some());
        assert!(stderr.contains("message classes: "), "{stderr}");
        assert!(stderr.contains("1 topic keys"), "{stderr}");
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
    let out = keyway(
        &[
            "contract", "gen", "-I", "tree", "--lang", "go", "--out", "x",
        ],
        &dir,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'go'"));
}

#[test]
fn a_git_revision_is_a_baseline() {
    let repo = std::env::temp_dir().join(format!("keyway-git-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(repo.join("proto")).unwrap();
    let case = root().join("cases/break-enum-value-removed");
    let copy = |from: &Path| {
        for sub in ["acme/queue/options.proto", "acme/orders/v1/orders.proto"] {
            let target = repo.join("proto").join(sub);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(from.join(sub), target).unwrap();
        }
    };
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    copy(&root().join("base"));
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "baseline"]);
    copy(&case.join("after"));
    let out = keyway(
        &[
            "contract",
            "breaking",
            "-I",
            "proto",
            "--against",
            "git:HEAD",
        ],
        &repo,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("[enum-value-removed] enum value `CLOSED` (2)"),
        "{text}"
    );
    let out = keyway(
        &[
            "contract",
            "breaking",
            "-I",
            "proto",
            "--against",
            "git:no-such-rev",
        ],
        &repo,
    );
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&repo).unwrap();
}
