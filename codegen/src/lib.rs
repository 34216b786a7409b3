//! The build-time generator of Keyway: `.proto` files in, Rust bindings with protobuf-JSON
//! codecs and typed topic bindings out. Pure Rust: `.proto` files are compiled with protox, no
//! `protoc` is needed.
//!
//! # Walkthrough
//!
//! **1. `Cargo.toml`.** Generated code needs only the runtime; the generator is a build
//! dependency.
//!
//! ```toml
//! [dependencies]
//! keyway-runtime = "0.1"
//!
//! [build-dependencies]
//! keyway-codegen = "0.1"
//! ```
//!
//! **2. The contract.** Payload messages name the topic keys that carry them with a
//! `topic_keys` message option (`repeated string topic_keys = 50001` on
//! `google.protobuf.MessageOptions`, declared in any package). `proto/acme/orders/v1/orders.proto`:
//!
//! ```proto
#![doc = include_str!("../walkthrough/proto/acme/orders/v1/orders.proto")]
//! ```
//!
//! **3. `build.rs`.** One call. It compiles the files and their imports, tells cargo to rerun
//! when any of them changes, checks every topic binding (a key bound twice, a bad key name, a key
//! on a nested message all fail the build with `file:line:col` diagnostics), and writes the
//! bindings. Here it runs for real, into a scratch directory instead of `$OUT_DIR`:
//!
//! ```
//! # let out = std::env::temp_dir().join(format!("keyway-walkthrough-{}", std::process::id()));
//! # let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/walkthrough/proto");
//! keyway_codegen::Builder::new()
//! #   .out_dir(&out)
//!     .compile_protos(&["acme/orders/v1/orders.proto"], &[proto])?;
//! # let topics = std::fs::read_to_string(out.join("_topics.rs"))?;
//! # assert!(topics.contains("pub struct OrderPlaced;"));
//! # std::fs::remove_dir_all(&out)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! (In a real `build.rs`: `fn main() -> Result<(), keyway_codegen::Error> {
//! keyway_codegen::compile_protos(&["acme/orders/v1/orders.proto"], &["proto"]) }`.)
//!
//! **4. Use the bindings.** `include!` the module tree (in a real crate:
//! `include!(concat!(env!("OUT_DIR"), "/_includes.rs"))`); every package becomes a module and the
//! topic bindings live in `topics`: a `TopicKey` enum and, per key, a marker type with a typed
//! producer and consumer. A producer of one topic takes only the message bound to it; the wrong
//! message is a compile error.
//!
//! ```
//! mod contract {
//!     include!(concat!(env!("CARGO_MANIFEST_DIR"), "/walkthrough/generated/_includes.rs"));
//! }
//! # use std::sync::Mutex;
//! # use keyway_runtime::transport::*;
//! # #[derive(Default)] struct Memory(Mutex<Vec<(String, OutgoingMessage)>>);
//! # impl Publisher for Memory {
//! #     async fn publish(&self, topic: &str, m: OutgoingMessage) -> Result<PublishReceipt, TransportError> {
//! #         self.0.lock().unwrap().push((topic.to_owned(), m));
//! #         Ok(PublishReceipt::Published)
//! #     }
//! # }
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
//! # }
//! use contract::acme::orders::v1::OrderPlaced;
//! use contract::topics::{self, OrderPlacedConsumer, OrderPlacedProducer, TopicKey};
//! use keyway_runtime::stub::{Handled, HandlerError, TopicHandler};
//!
//! // Keys are an enum; parsing an unknown one lists the valid ones.
//! assert_eq!("order-placed".parse::<TopicKey>()?, TopicKey::OrderPlaced);
//! assert_eq!(TopicKey::OrderPlaced.message_name(), "acme.orders.v1.OrderPlaced");
//!
//! // Publish: encoded as protobuf JSON, on the topic's key.
//! let backend = Memory::default();
//! let producer = OrderPlacedProducer::new(&backend);
//! let order = OrderPlaced { order_id: "o-1".into(), total_cents: 1250 };
//! let id = MessageId::intent("o-1", &["placed"])?;
//! block_on(producer.publish(&order, id, "o-1", Metadata::new()))?;
//! let (topic, sent) = backend.0.lock().unwrap().pop().unwrap();
//! assert_eq!(topic, "order-placed");
//! assert_eq!(sent.payload, br#"{"order_id":"o-1","total_cents":"1250"}"#);
//!
//! // Consume: the handler gets a decoded OrderPlaced; an undecodable payload never reaches it.
//! struct Billing;
//! impl TopicHandler<topics::OrderPlaced> for Billing {
//!     async fn handle(&self, order: OrderPlaced, _: &Delivery) -> Result<Handled, HandlerError> {
//!         assert_eq!(order.total_cents, 1250);
//!         Ok(Handled::Ack)
//!     }
//! }
//! let consumer = OrderPlacedConsumer::new(Billing);
//! # struct NoLease;
//! # impl Lease for NoLease {
//! #     fn extend(&self, _: std::time::Duration) -> BoxFuture<'_, Result<(), TransportError>> { Box::pin(async { Ok(()) }) }
//! #     fn publish_on_ack(&self, _: &str, _: OutgoingMessage) -> BoxFuture<'_, Result<(), TransportError>> {
//! #         Box::pin(async { Err(TransportError::new(TransportErrorKind::Invalid, "not consumed from a backend")) })
//! #     }
//! # }
//! let delivery = Delivery {
//!     topic: topic.clone(), id: sent.id.to_string(), partition_key: sent.partition_key,
//!     payload: sent.payload, metadata: sent.metadata, published_at_ms: 0, attempt: 1,
//!     lease: std::sync::Arc::new(NoLease),
//! };
//! assert_eq!(block_on(Handler::handle(&consumer, &delivery)), Outcome::Ack);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is generated
//!
//! Into `$OUT_DIR` (or [`Builder::out_dir`]), rewriting a file only when its contents change:
//! - `<package>.rs`: prost-build's structs and enums, one file per package; a message that is
//!   extended in the compiled tree has a field per extension (named by the extension's full
//!   name relative to the message's package: `extension_int32`, `scope_ext`), since prost
//!   keeps no extensions otherwise;
//! - `<package>.json.rs`: the protobuf-JSON codec of each message and enum (see
//!   `keyway_runtime::json` for the mapping), written by this crate, with the tree's JSON
//!   options ([`Builder::json_options`]);
//! - `_topics.rs`: the topic bindings (module `topics`);
//! - `_includes.rs`: the module tree of all packages, `topics`, and `FILE_DESCRIPTOR_SET`;
//! - `file_descriptor_set.bin`: the encoded `FileDescriptorSet` with imports, source info and
//!   custom options, for reflection and for clients in other languages.
//!
//! Generated code depends only on `keyway-runtime` (prost is reached through it), never on the
//! crate that defines the contract.

mod arbitrary;
pub mod clients;
pub mod contract;
mod diagnostics;
mod json;
mod names;
mod topics;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, FileDescriptor};

pub use diagnostics::{Diagnostic, Location};
pub use json::{FieldNames, JsonOptions};
pub use topics::{TopicBinding, TOPIC_KEYS_NUMBER, TOPIC_KEYS_OPTION};

/// Name of the encoded descriptor set written next to the generated code.
pub const DESCRIPTOR_SET_FILE: &str = "file_descriptor_set.bin";
/// Name of the file that lays out the module tree.
pub const INCLUDE_FILE: &str = "_includes.rs";
/// Name of the file with the topic bindings, included as module `topics`.
pub const TOPICS_FILE: &str = "_topics.rs";
/// The module of the topic bindings, beside the package modules.
const TOPICS_MODULE: &str = "topics";

/// Compile `protos` (found through `includes`) and write the bindings into `$OUT_DIR`, with the
/// default options. Equivalent to `Builder::new().compile_protos(protos, includes)`.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    Builder::new().compile_protos(protos, includes)
}

/// Compile `.proto` files into a descriptor pool, with imports, source info and custom options.
/// Errors come back as `file:line:col` diagnostics.
pub fn compile(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<Compiled, Error> {
    let mut compiler = protox::Compiler::new(includes).map_err(Error::protox)?;
    compiler.include_imports(true).include_source_info(true);
    for proto in protos {
        compiler.open_file(proto).map_err(Error::protox)?;
    }
    let mut sources = Vec::new();
    let mut texts = BTreeMap::new();
    for file in compiler.files() {
        if let Some(path) = file.path() {
            sources.push(path.to_path_buf());
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            texts.insert(file.name().to_owned(), text);
        }
    }
    Ok(Compiled {
        pool: compiler.descriptor_pool(),
        sources,
        texts,
    })
}

/// In-memory `.proto` sources for [`compile_sources`].
struct MemoryResolver(BTreeMap<String, String>);

impl protox::file::FileResolver for MemoryResolver {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match self.0.get(name) {
            Some(text) => protox::file::File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compile `.proto` sources held in memory (file name → text), every one of them, with the
/// well-known types available to import. For trees read from a directory, a git revision or
/// anywhere else.
pub fn compile_sources(sources: &BTreeMap<String, String>) -> Result<Compiled, Error> {
    let mut chain = protox::file::ChainFileResolver::new();
    chain.add(MemoryResolver(sources.clone()));
    chain.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true).include_source_info(true);
    for name in sources.keys() {
        compiler.open_file(name).map_err(Error::protox)?;
    }
    Ok(Compiled {
        pool: compiler.descriptor_pool(),
        sources: Vec::new(),
        texts: sources.clone(),
    })
}

/// Every `.proto` file under `dirs`, named relative to the directory it was found in.
pub fn read_tree(dirs: &[impl AsRef<Path>]) -> Result<BTreeMap<String, String>, Error> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), Error> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "proto") {
                let name = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                out.insert(name, text);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    for dir in dirs {
        walk(dir.as_ref(), dir.as_ref(), &mut out)?;
    }
    Ok(out)
}

/// The result of [`compile`].
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Every compiled file, imports included.
    pub pool: DescriptorPool,
    /// The files read from disk, for `cargo:rerun-if-changed`.
    pub sources: Vec<PathBuf>,
    /// Source text by file name (as imported), for diagnostics that quote a line.
    pub texts: BTreeMap<String, String>,
}

impl Compiled {
    /// Wrap a pool that did not come from source files (a decoded descriptor set, say).
    /// Diagnostics then give `file:line:col` when the set has source info, without the line.
    pub fn from_pool(pool: DescriptorPool) -> Self {
        Compiled {
            pool,
            sources: Vec::new(),
            texts: BTreeMap::new(),
        }
    }

    /// Every topic binding, or every violation of the binding rules (see [`TopicBinding`]).
    /// Empty when no `topic_keys` option is defined.
    pub fn topic_bindings(
        &self,
        extension: Option<&str>,
    ) -> Result<Vec<TopicBinding>, Vec<Diagnostic>> {
        let Some(ext) = topics::find_extension(&self.pool, extension)? else {
            return Ok(Vec::new());
        };
        let bindings = topics::bindings(&self.pool, &ext, &self.texts);
        let problems = topics::validate(&bindings);
        if problems.is_empty() {
            Ok(bindings)
        } else {
            Err(problems)
        }
    }
}

/// One generated file: a name relative to the output directory, and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// File name, such as `keyway.base.change.json.rs`.
    pub name: String,
    /// The bytes to write.
    pub contents: Vec<u8>,
}

/// The generator's options.
#[derive(Debug)]
pub struct Builder {
    prost: prost_build::Config,
    runtime_path: String,
    out_dir: Option<PathBuf>,
    format: bool,
    topic_keys_extension: Option<String>,
    arbitrary: bool,
    json: JsonOptions,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: runtime at `::keyway_runtime`, output to `$OUT_DIR`, formatted output.
    pub fn new() -> Self {
        Builder {
            prost: prost_build::Config::new(),
            runtime_path: "::keyway_runtime".to_owned(),
            out_dir: None,
            format: true,
            topic_keys_extension: None,
            arbitrary: false,
            json: JsonOptions::queue(),
        }
    }

    /// The JSON options of the generated tree: what `keyway_runtime::json::to_vec`,
    /// `from_slice` and the other entry points without `_with` use for its messages (each
    /// message's `JsonMessage::JSON_OPTIONS`). Callers can still pass other options per call to
    /// the `*_with` entry points.
    ///
    /// Default: [`JsonOptions::queue`], the queue contract's wire form (proto field names
    /// written, unknown fields and unknown enum names ignored), so that existing consumers and
    /// producers keep reading each other. [`JsonOptions::protobuf`] is what protobuf's own
    /// libraries do by default (lowerCamelCase names, unknown fields rejected), for trees whose
    /// JSON goes to other protobuf implementations, such as an OTLP/JSON receiver:
    ///
    /// ```
    /// # let out = std::env::temp_dir().join(format!("keyway-json-options-{}", std::process::id()));
    /// # let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/walkthrough/proto");
    /// keyway_codegen::Builder::new()
    /// #   .out_dir(&out)
    ///     .json_options(keyway_codegen::JsonOptions::protobuf())
    ///     .compile_protos(&["acme/orders/v1/orders.proto"], &[proto])?;
    /// # let json = std::fs::read_to_string(out.join("acme.orders.v1.json.rs"))?;
    /// # assert!(json.contains("JsonOptions::protobuf()"), "{json}");
    /// # std::fs::remove_dir_all(&out)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn json_options(&mut self, options: JsonOptions) -> &mut Self {
        self.json = options;
        self
    }

    /// Also emit proptest `Arbitrary` impls for every message (`<package>.arbitrary.rs`), with
    /// strategies that reach the edges of the JSON mapping. Needs `keyway-runtime`'s `proptest`
    /// feature. Default: off.
    pub fn arbitrary(&mut self, enabled: bool) -> &mut Self {
        self.arbitrary = enabled;
        self
    }

    /// Start from your own prost-build configuration (attributes, boxing, bytes type...). The
    /// generator then sets what its codecs rely on: prost and the well-known types reached
    /// through the runtime, and type names (`prost::Name`, for `Any`). Maps may be `HashMap`
    /// (the default) or `BTreeMap`; either way JSON output lists entries in key order. Default: `prost_build::Config::new()`.
    pub fn prost_config(&mut self, config: prost_build::Config) -> &mut Self {
        self.prost = config;
        self
    }

    /// Path by which generated code reaches `keyway-runtime`, for a renamed or re-exported
    /// dependency. Default: `::keyway_runtime`.
    pub fn runtime_path(&mut self, path: impl Into<String>) -> &mut Self {
        self.runtime_path = path.into();
        self
    }

    /// Where [`Builder::compile_protos`] writes. Default: the `OUT_DIR` environment variable.
    pub fn out_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether Rust output is formatted with prettyplease. Default: `true`.
    pub fn format(&mut self, enabled: bool) -> &mut Self {
        self.format = enabled;
        self
    }

    /// The full name of the message option that lists a message's topic keys. Default: the one
    /// extension of `google.protobuf.MessageOptions` named `topic_keys` (it is an error to
    /// define several); with none defined, no topic bindings are generated.
    pub fn topic_keys_extension(&mut self, full_name: impl Into<String>) -> &mut Self {
        self.topic_keys_extension = Some(full_name.into());
        self
    }

    /// Compile `protos` and write the generated files, telling cargo to rerun when any proto
    /// file read (imports included) changes.
    pub fn compile_protos(
        &mut self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let compiled = compile(protos, includes)?;
        for source in &compiled.sources {
            println!("cargo:rerun-if-changed={}", source.display());
        }
        let (out_dir, from_env) = match &self.out_dir {
            Some(dir) => (dir.clone(), false),
            None => match std::env::var_os("OUT_DIR") {
                Some(dir) => (PathBuf::from(dir), true),
                None => {
                    return Err(Error::new(ErrorKind::Config(
                        "OUT_DIR is not set: run from a build script or set Builder::out_dir"
                            .into(),
                    )))
                }
            },
        };
        let files = self.generate_files(&compiled, from_env)?;
        std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
        for file in files {
            write_if_changed(&out_dir.join(&file.name), &file.contents)?;
        }
        Ok(())
    }

    /// The pure core: every generated file for `compiled`, nothing written. Files of package
    /// `google.protobuf` are not generated (the runtime provides the well-known types).
    /// Invalid topic bindings fail with every violation, each at its option.
    pub fn generate(&mut self, compiled: &Compiled) -> Result<Vec<GeneratedFile>, Error> {
        self.generate_files(compiled, false)
    }

    fn generate_files(
        &mut self,
        compiled: &Compiled,
        include_from_out_dir: bool,
    ) -> Result<Vec<GeneratedFile>, Error> {
        let pool = &compiled.pool;
        let packages = packages(pool);
        if let Some(package) = packages
            .keys()
            .find(|p| names::package_modules(p).first().map(String::as_str) == Some(TOPICS_MODULE))
        {
            return Err(Error::new(ErrorKind::Compile(vec![Diagnostic::message(format!(
                "package `{package}` would share the module `{TOPICS_MODULE}` with the generated topic bindings; rename its first component"
            ))])));
        }
        let bindings = compiled
            .topic_bindings(self.topic_keys_extension.as_deref())
            .map_err(|d| Error::new(ErrorKind::Compile(d)))?;
        let extensions = json::extension_fields(pool, &compiled.texts)
            .map_err(|d| Error::new(ErrorKind::Compile(d)))?;
        let cycles = json::required_cycles(pool, &compiled.texts);
        if !cycles.is_empty() {
            return Err(Error::new(ErrorKind::Compile(cycles)));
        }
        let mut files = Vec::new();

        let prost_out = self.generate_prost(pool, &extensions)?;
        for (package, package_files) in &packages {
            let base = file_stem(package);
            let prost_code = prost_out.get(package).cloned().unwrap_or_default();
            files.push(GeneratedFile {
                name: format!("{base}.rs"),
                contents: prost_code.into_bytes(),
            });
            let json = json::generate(
                package_files,
                package,
                &self.runtime_path,
                &self.json,
                &extensions,
            );
            files.push(GeneratedFile {
                name: format!("{base}.json.rs"),
                contents: self.finish_rust(&format!("{base}.json.rs"), &json)?,
            });
            if self.arbitrary {
                let code = arbitrary::generate(package_files, package, &self.runtime_path);
                files.push(GeneratedFile {
                    name: format!("{base}.arbitrary.rs"),
                    contents: self.finish_rust(&format!("{base}.arbitrary.rs"), &code)?,
                });
            }
        }

        files.push(GeneratedFile {
            name: TOPICS_FILE.to_owned(),
            contents: self.finish_rust(
                TOPICS_FILE,
                &topics::generate(&bindings, &self.runtime_path),
            )?,
        });
        files.push(GeneratedFile {
            name: INCLUDE_FILE.to_owned(),
            contents: self.include_file(&packages, include_from_out_dir)?,
        });
        files.push(GeneratedFile {
            name: DESCRIPTOR_SET_FILE.to_owned(),
            contents: pool.encode_to_vec(),
        });
        Ok(files)
    }

    fn generate_prost(
        &mut self,
        pool: &DescriptorPool,
        extensions: &BTreeMap<String, Vec<json::ExtensionField>>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let runtime = &self.runtime_path;
        self.prost
            .prost_path(format!("{runtime}::__private::prost"))
            .prost_types_path(format!("{runtime}::wkt"))
            .enable_type_names();
        let mut protos: Vec<prost_types::FileDescriptorProto> = pool
            .file_descriptor_protos()
            .filter(|f| f.package() != "google.protobuf")
            .cloned()
            .collect();
        add_extension_fields(pool, &mut protos, extensions);
        let requests = protos
            .into_iter()
            .map(|f| {
                (
                    prost_build::Module::from_protobuf_package_name(f.package()),
                    f,
                )
            })
            .collect();
        let modules = self
            .prost
            .generate(requests)
            .map_err(|e| Error::new(ErrorKind::Prost(e.to_string())))?;
        let mut by_package = BTreeMap::new();
        for file in pool.files() {
            let module = prost_build::Module::from_protobuf_package_name(file.package_name());
            if let Some(code) = modules.get(&module) {
                by_package.insert(file.package_name().to_owned(), code.clone());
            }
        }
        Ok(by_package)
    }

    fn finish_rust(&self, name: &str, code: &str) -> Result<Vec<u8>, Error> {
        let body = if self.format {
            let file = syn::parse_file(code).map_err(|e| {
                Error::new(ErrorKind::Internal(format!(
                    "generated {name} does not parse: {e}"
                )))
            })?;
            prettyplease::unparse(&file)
        } else {
            code.to_owned()
        };
        Ok(format!("// @generated by keyway-codegen. Do not edit.\n{body}").into_bytes())
    }

    fn include_file(
        &self,
        packages: &BTreeMap<String, Vec<FileDescriptor>>,
        from_out_dir: bool,
    ) -> Result<Vec<u8>, Error> {
        let include = |file: &str| {
            if from_out_dir {
                format!("include!(concat!(env!(\"OUT_DIR\"), \"/{file}\"));\n")
            } else {
                format!("include!(\"{file}\");\n")
            }
        };
        // Build the module tree: package path → include lines.
        let mut tree = ModuleTree::default();
        for package in packages.keys() {
            let base = file_stem(package);
            let node = tree.node(&names::package_modules(package));
            node.includes.push(include(&format!("{base}.rs")));
            node.includes.push(include(&format!("{base}.json.rs")));
            if self.arbitrary {
                node.includes.push(include(&format!("{base}.arbitrary.rs")));
            }
        }
        let mut code = String::new();
        tree.render(&mut code, "");
        code.push_str(&format!(
            "/// Topic keys, each bound to the message it carries, with typed producer and consumer stubs.\n\
             pub mod {TOPICS_MODULE} {{\n{}}}\n",
            include(TOPICS_FILE)
        ));
        let descriptor = if from_out_dir {
            format!("include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{DESCRIPTOR_SET_FILE}\"))")
        } else {
            format!("include_bytes!(\"{DESCRIPTOR_SET_FILE}\")")
        };
        code.push_str(&format!(
            "/// The encoded `google.protobuf.FileDescriptorSet` of every compiled file, imports, \
             source info and custom options included.\n\
             pub const FILE_DESCRIPTOR_SET: &[u8] = {descriptor};\n"
        ));
        // Module bodies are `include!`s, which prettyplease keeps as written.
        self.finish_rust(INCLUDE_FILE, &code)
    }
}

#[derive(Default)]
struct ModuleTree {
    includes: Vec<String>,
    children: BTreeMap<String, ModuleTree>,
}

impl ModuleTree {
    fn node(&mut self, path: &[String]) -> &mut ModuleTree {
        path.iter().fold(self, |node, part| {
            node.children.entry(part.clone()).or_default()
        })
    }

    fn render(&self, out: &mut String, package: &str) {
        for line in &self.includes {
            out.push_str(line);
        }
        for (name, child) in &self.children {
            let package = if package.is_empty() {
                name.clone()
            } else {
                format!("{package}.{name}")
            };
            let doc = if child.includes.is_empty() {
                format!(" Packages under `{package}`.")
            } else {
                format!(" Package `{package}`.")
            };
            out.push_str(&format!("#[doc = {doc:?}]\npub mod {name} {{\n"));
            child.render(out, &package);
            out.push_str("}\n");
        }
    }
}

/// Give every extended message a field per extension of it (see `json::ExtensionField`), in
/// the descriptors prost-build generates from. The written descriptor set keeps the
/// extensions as they are declared.
fn add_extension_fields(
    pool: &DescriptorPool,
    protos: &mut [prost_types::FileDescriptorProto],
    extensions: &BTreeMap<String, Vec<json::ExtensionField>>,
) {
    for (message, fields) in extensions {
        let Some(message) = pool.get_message_by_name(message) else {
            continue;
        };
        let Some(file) = protos
            .iter_mut()
            .find(|f| f.name() == message.parent_file().name())
        else {
            continue;
        };
        // The message's path in its file: (4, index) for a top-level message, then (3, index)
        // per level of nesting.
        let path = message.path();
        let Some(mut target) = path
            .get(1)
            .and_then(|&i| file.message_type.get_mut(i as usize))
        else {
            continue;
        };
        let mut found = true;
        for pair in path[2..].chunks(2) {
            match pair
                .get(1)
                .and_then(|&i| target.nested_type.get_mut(i as usize))
            {
                Some(nested) => target = nested,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut locations = Vec::new();
        for field in fields {
            let extension = &field.extension;
            let mut proto = extension.field_descriptor_proto().clone();
            proto.name = Some(field.field_name.clone());
            proto.extendee = None;
            proto.json_name = None;
            proto.oneof_index = None;
            proto.proto3_optional = None;
            // prost-build looks up every field's source location (for its doc comments): the
            // field gets the extension's.
            let mut location = extension
                .parent_file_descriptor_proto()
                .source_code_info
                .as_ref()
                .and_then(|info| info.location.iter().find(|l| l.path == extension.path()))
                .cloned()
                .unwrap_or_default();
            location.path = path.to_vec();
            location.path.extend([2, target.field.len() as i32]);
            locations.push(location);
            target.field.push(proto);
        }
        if let Some(info) = file.source_code_info.as_mut() {
            info.location.extend(locations);
        }
    }
}

/// Files grouped by package, excluding the well-known types.
fn packages(pool: &DescriptorPool) -> BTreeMap<String, Vec<FileDescriptor>> {
    let mut packages: BTreeMap<String, Vec<FileDescriptor>> = BTreeMap::new();
    for file in pool.files() {
        if file.package_name() == "google.protobuf" {
            continue;
        }
        packages
            .entry(file.package_name().to_owned())
            .or_default()
            .push(file);
    }
    packages
}

/// File stem of a package's generated files, as prost-build names them (`_` for no package).
fn file_stem(package: &str) -> String {
    if package.is_empty() {
        "_".to_owned()
    } else {
        names::package_modules(package).join(".")
    }
}

fn write_if_changed(path: &Path, contents: &[u8]) -> Result<(), Error> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    std::fs::write(path, contents).map_err(|e| Error::io(path, e))
}

/// Why generation failed. Its `Display` (and `Debug`, so a build script's `?` prints it well)
/// is the rendered diagnostics.
pub struct Error {
    kind: Box<ErrorKind>,
}

#[derive(Debug)]
enum ErrorKind {
    Compile(Vec<Diagnostic>),
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    Prost(String),
    Config(String),
    Internal(String),
}

impl Error {
    fn new(kind: ErrorKind) -> Self {
        Error {
            kind: Box::new(kind),
        }
    }

    fn protox(error: protox::Error) -> Self {
        Error::new(ErrorKind::Compile(Diagnostic::from_protox(&error)))
    }

    fn io(path: &Path, error: std::io::Error) -> Self {
        Error::new(ErrorKind::Io {
            path: path.to_owned(),
            error,
        })
    }

    /// The problems in the `.proto` files, when that is what failed.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match &*self.kind {
            ErrorKind::Compile(d) => d,
            _ => &[],
        }
    }

    /// Whether the `.proto` files failed to compile.
    pub fn is_compile(&self) -> bool {
        matches!(&*self.kind, ErrorKind::Compile(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            ErrorKind::Compile(diagnostics) => {
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    f.write_str(&d.render())?;
                }
                Ok(())
            }
            ErrorKind::Io { path, error } => write!(f, "{}: {error}", path.display()),
            ErrorKind::Prost(e) => write!(f, "prost-build failed: {e}"),
            ErrorKind::Config(e) => f.write_str(e),
            ErrorKind::Internal(e) => write!(f, "internal error in keyway-codegen: {e}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{self}")
    }
}

impl std::error::Error for Error {}
