//! Tidy test: the layering of the crate's own imports.
//!
//! Owns one check, in the style of rust-analyzer's tidy tests: every
//! crate-internal path in `src/` (`crate::<module>`, in a `use` or inline in
//! code) goes down or sideways in the table under `## Layers` in
//! `docs/ARCHITECTURE.md`, never up; the imports between top-level modules
//! form no cycle; and the table and `src/` name the same modules. It collects
//! every problem, each with its file and line, and fails once with all of them.
//!
//! It is test-only (`#[cfg(test)]`) and must never affect the build: it uses
//! std alone, adds no dependency, and only reads files.
//!
//! Deliberately not followed: `super::` paths (even one that climbs out of a
//! top-level module), `use crate as alias`, and `crate::<item>` where the item
//! is not a top-level module (an item defined or re-exported in `lib.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the layers are written down, relative to the crate root.
const ARCHITECTURE_MD: &str = "docs/ARCHITECTURE.md";
/// The heading of the section that holds the layers table.
const LAYERS_HEADING: &str = "## Layers";
/// Beyond this many, more cycles only bury the ones worth breaking first.
const MAX_CYCLES_REPORTED: usize = 20;

/// One `crate::<to>` path written in a file of module `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    from: String,
    to: String,
    /// Relative to the crate root, with `/` separators: `src/http/ops.rs`.
    path: String,
    /// 1-based.
    line: usize,
}

/// The layers in `## Layers` of ARCHITECTURE.md, top of the stack first, each
/// the list of its module names.
///
/// The section runs from a `## Layers` heading to the next `# ` or `## `
/// heading (lines inside fenced code blocks do not count). Its first table,
/// a run of consecutive lines starting with `|`, must have a header row, a
/// delimiter row (`|---|---|`), and one row per layer whose second cell lists
/// module names in backticks separated by commas. The first cell is a free
/// name; further cells are ignored.
fn parse_layers(markdown: &str) -> Result<Vec<Vec<String>>, String> {
    let mut found_section = false;
    let mut in_fence = false;
    let mut table: Vec<(usize, &str)> = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            if found_section && !table.is_empty() {
                break;
            }
            continue;
        }
        if in_fence {
            continue;
        }
        if heading_level(trimmed).is_some_and(|level| level <= 2) {
            if found_section {
                break;
            }
            found_section = trimmed == LAYERS_HEADING;
            continue;
        }
        if !found_section {
            continue;
        }
        if trimmed.starts_with('|') {
            table.push((index + 1, trimmed));
        } else if !table.is_empty() {
            // A table is one run of `|` lines; the first one is the layers.
            break;
        }
    }

    if !found_section {
        return Err(format!("{ARCHITECTURE_MD}: no `{LAYERS_HEADING}` section"));
    }
    let [_header, (delimiter_line, delimiter), rows @ ..] = table.as_slice() else {
        return Err(format!(
            "{ARCHITECTURE_MD}: the `{LAYERS_HEADING}` section has no table \
             (a header row, a `|---|---|` row, then one row per layer)"
        ));
    };
    if !is_delimiter_row(delimiter) {
        return Err(format!(
            "{ARCHITECTURE_MD}:{delimiter_line}: expected the table's `|---|---|` row"
        ));
    }
    if rows.is_empty() {
        return Err(format!(
            "{ARCHITECTURE_MD}: the `{LAYERS_HEADING}` table has no layers"
        ));
    }

    let mut first_listed_on: BTreeMap<&str, usize> = BTreeMap::new();
    let mut layers = Vec::new();
    for &(line, row) in rows {
        let cells = table_cells(row);
        let (Some(&name), Some(&modules)) = (cells.first(), cells.get(1)) else {
            return Err(format!(
                "{ARCHITECTURE_MD}:{line}: a layer needs two cells: its name and its modules"
            ));
        };
        if modules.is_empty() {
            return Err(format!(
                "{ARCHITECTURE_MD}:{line}: layer `{name}` lists no modules"
            ));
        }
        let mut layer = Vec::new();
        for item in modules.split(',').map(str::trim) {
            let module = item
                .strip_prefix('`')
                .and_then(|rest| rest.strip_suffix('`'))
                .filter(|module| is_identifier(module))
                .ok_or_else(|| {
                    format!(
                        "{ARCHITECTURE_MD}:{line}: layer `{name}` lists {item:?}; \
                         write module names in backticks, comma separated"
                    )
                })?;
            if let Some(first) = first_listed_on.insert(module, line) {
                return Err(format!(
                    "{ARCHITECTURE_MD}:{line}: `{module}` is listed again (first on line {first})"
                ));
            }
            layer.push(module.to_owned());
        }
        layers.push(layer);
    }
    Ok(layers)
}

/// The level of a markdown ATX heading (`## x` is 2), or `None` for other lines.
fn heading_level(line: &str) -> Option<usize> {
    let level = line.chars().take_while(|&c| c == '#').count();
    let rest = &line[level..];
    (level > 0 && (rest.is_empty() || rest.starts_with(' '))).then_some(level)
}

/// The trimmed cells of a table row, without the outer pipes.
fn table_cells(row: &str) -> Vec<&str> {
    let inner = row.strip_prefix('|').unwrap_or(row);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// Whether a row is the `|---|:---:|` line between a table's header and body.
fn is_delimiter_row(row: &str) -> bool {
    table_cells(row)
        .iter()
        .all(|cell| cell.contains('-') && cell.chars().all(|c| c == '-' || c == ':'))
}

fn is_identifier(word: &str) -> bool {
    word.starts_with(|c: char| c.is_alphabetic() || c == '_')
        && word.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Every `crate::<name>` path in `source`, a file of `module` at `path`, where
/// `<name>` is a first segment after `crate::` (each top-level name of a
/// `crate::{...}` group) other than `module` itself. Paths in comments and in
/// string or char literals are not code and do not count. Names that are not
/// modules (items of `lib.rs`) are left to `check` to drop, since only it knows
/// which modules exist.
fn edges_in(module: &str, path: &str, source: &str) -> Vec<Edge> {
    let code = code_only(source);
    let tokens = tokens(&code);
    let mut named: Vec<(&str, usize)> = Vec::new();
    for (index, (token, _)) in tokens.iter().enumerate() {
        if *token != Token::Word("crate")
            || tokens.get(index + 1).map(|(next, _)| next) != Some(&Token::PathSep)
        {
            continue;
        }
        match tokens.get(index + 2) {
            Some(&(Token::Word(name), line)) => named.push((name, line)),
            Some((Token::Open, _)) => named.extend(group_heads(&tokens[index + 3..])),
            _ => {}
        }
    }

    // One edge per target per line: `crate::a::x(crate::a::y)` is one import.
    let mut seen = BTreeSet::new();
    named
        .into_iter()
        .filter(|&(name, _)| name != module && !matches!(name, "self" | "super" | "crate"))
        .filter(|&pair| seen.insert(pair))
        .map(|(name, line)| Edge {
            from: module.to_owned(),
            to: name.to_owned(),
            path: path.to_owned(),
            line,
        })
        .collect()
}

/// The first name of each item in a `{...}` group, given the tokens after its
/// opening brace: `config` and `launcher` in `{config::X, launcher::{Y, z::W}}`.
fn group_heads<'code>(tokens: &[(Token<'code>, usize)]) -> Vec<(&'code str, usize)> {
    let mut heads = Vec::new();
    let mut depth = 1;
    // Only a comma of this group (not of a nested one) starts an item, and
    // every token ends the start, so names in nested groups never count.
    let mut at_item_start = true;
    for &(token, line) in tokens {
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            Token::Comma if depth == 1 => {
                at_item_start = true;
                continue;
            }
            Token::Word(name) if at_item_start => heads.push((name, line)),
            _ => {}
        }
        at_item_start = false;
    }
    heads
}

/// What the edge scan needs to tell apart in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'code> {
    /// An identifier, keyword or number.
    Word(&'code str),
    /// `::`
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens of comment-free code, each with its 1-based line.
fn tokens(code: &str) -> Vec<(Token<'_>, usize)> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = code.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let token = match c {
            '\n' => {
                line += 1;
                continue;
            }
            c if c.is_whitespace() => continue,
            c if c.is_alphanumeric() || c == '_' => {
                let mut end = start + c.len_utf8();
                while let Some(&(at, next)) = chars.peek() {
                    if !(next.is_alphanumeric() || next == '_') {
                        break;
                    }
                    end = at + next.len_utf8();
                    chars.next();
                }
                Token::Word(&code[start..end])
            }
            ':' if chars.peek().is_some_and(|&(_, next)| next == ':') => {
                chars.next();
                Token::PathSep
            }
            '{' => Token::Open,
            '}' => Token::Close,
            ',' => Token::Comma,
            _ => Token::Other,
        };
        tokens.push((token, line));
    }
    tokens
}

/// `source` with its comments and the contents of its string and char
/// literals blanked out, newlines kept so that line numbers still match.
/// Raw identifiers (`r#type`) lose their `r#` so that they read as names.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let at = |index: usize| chars.get(index).copied();
    let mut code = String::with_capacity(source.len());
    let blank = |code: &mut String, span: &[char]| {
        code.extend(span.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let end = match c {
            // Line comments, doc comments included.
            '/' if at(i + 1) == Some('/') => (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len()),
            // Block comments, which nest.
            '/' if at(i + 1) == Some('*') => {
                let mut depth = 0;
                let mut j = i;
                while j < chars.len() {
                    if chars[j] == '/' && at(j + 1) == Some('*') {
                        depth += 1;
                        j += 2;
                    } else if chars[j] == '*' && at(j + 1) == Some('/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                j
            }
            '"' => string_end(&chars, i + 1),
            // A char literal with an escape: `'\''`, `'\u{1F600}'`.
            '\'' if at(i + 1) == Some('\\') => (i + 3..chars.len())
                .find(|&j| chars[j] == '\'')
                .map_or(chars.len(), |j| j + 1),
            // A plain char literal: `'x'`. Any other quote starts a lifetime
            // or a label, which the last arm keeps.
            '\'' if at(i + 2) == Some('\'') => i + 3,
            c if c.is_alphanumeric() || c == '_' => {
                let word_end = (i..chars.len())
                    .find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_'))
                    .unwrap_or(chars.len());
                let word: String = chars[i..word_end].iter().collect();
                let hashes = (word_end..chars.len())
                    .take_while(|&j| chars[j] == '#')
                    .count();
                let is_raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
                if is_raw_prefix && at(word_end + hashes) == Some('"') {
                    raw_string_end(&chars, word_end + hashes + 1, hashes)
                } else if word == "r"
                    && hashes == 1
                    && at(word_end + 1).is_some_and(|c| c.is_alphabetic() || c == '_')
                {
                    // `r#name`: keep the name, drop the `r#`.
                    code.push_str("  ");
                    i = word_end + 1;
                    continue;
                } else {
                    code.push_str(&word);
                    i = word_end;
                    continue;
                }
            }
            _ => {
                code.push(c);
                i += 1;
                continue;
            }
        };
        let end = end.min(chars.len());
        blank(&mut code, &chars[i..end]);
        i = end;
    }
    code
}

/// The index just past the closing quote of a string whose contents start at
/// `start`.
fn string_end(chars: &[char], start: usize) -> usize {
    let mut j = start;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 2,
            '"' => return j + 1,
            _ => j += 1,
        }
    }
    chars.len()
}

/// The index just past the closing `"###` of a raw string with `hashes`
/// hashes whose contents start at `start`.
fn raw_string_end(chars: &[char], start: usize, hashes: usize) -> usize {
    (start..chars.len())
        .find(|&j| {
            chars[j] == '"'
                && chars[j + 1..].len() >= hashes
                && chars[j + 1..j + 1 + hashes].iter().all(|&c| c == '#')
        })
        .map_or(chars.len(), |j| j + 1 + hashes)
}

/// Every problem with `edges` (between the modules in `modules_present`)
/// against `layers` (top of the stack first), one line each: modules missing
/// from the table or from `src/`, imports that run up the table, and import
/// cycles.
fn check(
    layers: &[Vec<String>],
    edges: &[Edge],
    modules_present: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let row_of: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(row, modules)| modules.iter().map(move |module| (module.as_str(), row)))
        .collect();

    for module in modules_present {
        if !row_of.contains_key(module.as_str()) {
            problems.push(format!(
                "`{module}` is a module in src/ but is not in the layers table in {ARCHITECTURE_MD}"
            ));
        }
    }
    for &module in row_of.keys() {
        if !modules_present.contains(module) {
            problems.push(format!(
                "`{module}` is in the layers table in {ARCHITECTURE_MD} but there is no such module in src/"
            ));
        }
    }

    // A `crate::<name>` whose name is no module is an item of lib.rs, not an import
    // between modules.
    let imports: Vec<&Edge> = edges
        .iter()
        .filter(|edge| edge.from != edge.to && modules_present.contains(&edge.to))
        .collect();
    for edge in &imports {
        if let (Some(from_row), Some(to_row)) =
            (row_of.get(edge.from.as_str()), row_of.get(edge.to.as_str()))
            && to_row < from_row
        {
            problems.push(format!(
                "{}:{}: `{}` imports `{}`, which is above it in {ARCHITECTURE_MD}'s layers",
                edge.path, edge.line, edge.from, edge.to
            ));
        }
    }

    problems.extend(cycle_problems(&imports));
    problems
}

/// One line per elementary cycle among `imports`, each cycle once (starting
/// from its alphabetically first module), with a file and line for each of its
/// edges.
fn cycle_problems(imports: &[&Edge]) -> Vec<String> {
    // The first place each edge is made: imports come in file and line order.
    let mut witness: BTreeMap<(&str, &str), &Edge> = BTreeMap::new();
    for edge in imports {
        witness
            .entry((edge.from.as_str(), edge.to.as_str()))
            .or_insert(edge);
    }
    let modules: Vec<&str> = witness
        .keys()
        .flat_map(|&(from, to)| [from, to])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index_of = |module: &str| {
        modules
            .binary_search(&module)
            .expect("every module of an edge is in `modules`")
    };
    let mut successors = vec![Vec::new(); modules.len()];
    for &(from, to) in witness.keys() {
        successors[index_of(from)].push(index_of(to));
    }

    let cycles = elementary_cycles(&successors, MAX_CYCLES_REPORTED + 1);
    let mut problems: Vec<String> = cycles
        .iter()
        .take(MAX_CYCLES_REPORTED)
        .map(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&index| modules[index]).collect();
            let mut route: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
            route.push(format!("`{}`", names[0]));
            let places: Vec<String> = names
                .iter()
                .zip(names.iter().cycle().skip(1))
                .map(|(&from, &to)| {
                    let edge = witness[&(from, to)];
                    format!("{}:{} (`{from}` imports `{to}`)", edge.path, edge.line)
                })
                .collect();
            format!("import cycle {}: {}", route.join(" -> "), places.join(", "))
        })
        .collect();
    if cycles.len() > MAX_CYCLES_REPORTED {
        problems.push(format!(
            "more import cycles than the {MAX_CYCLES_REPORTED} above; break those first"
        ));
    }
    problems
}

/// The elementary cycles of a graph (Johnson's algorithm), at most `limit` of
/// them, each as its nodes from its smallest one on. Each node's successors
/// are given by index.
fn elementary_cycles(successors: &[Vec<usize>], limit: usize) -> Vec<Vec<usize>> {
    let mut search = CycleSearch {
        successors,
        start: 0,
        in_scope: vec![false; successors.len()],
        blocked: vec![false; successors.len()],
        blocked_by: vec![BTreeSet::new(); successors.len()],
        path: Vec::new(),
        cycles: Vec::new(),
        limit,
    };
    for start in 0..successors.len() {
        // A cycle whose smallest node is `start` lies within the nodes from
        // `start` on, in the strongly connected component of `start` there.
        let reaches = |forward: bool| {
            let mut seen = vec![false; successors.len()];
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(node) = stack.pop() {
                let next: Vec<usize> = if forward {
                    successors[node].clone()
                } else {
                    (start..successors.len())
                        .filter(|&from| successors[from].contains(&node))
                        .collect()
                };
                for next in next {
                    if next >= start && !seen[next] {
                        seen[next] = true;
                        stack.push(next);
                    }
                }
            }
            seen
        };
        let (forward, backward) = (reaches(true), reaches(false));
        search.start = start;
        for node in 0..successors.len() {
            search.in_scope[node] = forward[node] && backward[node];
            search.blocked[node] = false;
            search.blocked_by[node].clear();
        }
        search.circuit(start);
        if search.cycles.len() >= limit {
            break;
        }
    }
    search.cycles.truncate(limit);
    search.cycles
}

/// The state of Johnson's search for the cycles through one start node.
struct CycleSearch<'graph> {
    successors: &'graph [Vec<usize>],
    start: usize,
    in_scope: Vec<bool>,
    blocked: Vec<bool>,
    blocked_by: Vec<BTreeSet<usize>>,
    path: Vec<usize>,
    cycles: Vec<Vec<usize>>,
    limit: usize,
}

impl CycleSearch<'_> {
    /// Records every cycle that continues `path` through `node` back to the
    /// start; whether there was one.
    fn circuit(&mut self, node: usize) -> bool {
        // Borrowed from the graph, not from `self`, so the loop may recurse.
        let successors = self.successors;
        let mut closed_a_cycle = false;
        self.path.push(node);
        self.blocked[node] = true;
        for &next in &successors[node] {
            if self.cycles.len() >= self.limit {
                break;
            }
            if !self.in_scope[next] {
                continue;
            }
            if next == self.start {
                self.cycles.push(self.path.clone());
                closed_a_cycle = true;
            } else if !self.blocked[next] && self.circuit(next) {
                closed_a_cycle = true;
            }
        }
        if closed_a_cycle {
            self.unblock(node);
        } else {
            for &next in &successors[node] {
                if self.in_scope[next] {
                    self.blocked_by[next].insert(node);
                }
            }
        }
        self.path.pop();
        closed_a_cycle
    }

    fn unblock(&mut self, node: usize) {
        self.blocked[node] = false;
        for waiting in std::mem::take(&mut self.blocked_by[node]) {
            if self.blocked[waiting] {
                self.unblock(waiting);
            }
        }
    }
}

/// Every layering problem of the crate at `root`: its `src/` against the
/// layers in its `docs/ARCHITECTURE.md`.
fn problems_in_crate(root: &Path) -> Vec<String> {
    let architecture = root.join(ARCHITECTURE_MD);
    let markdown = fs::read_to_string(&architecture)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", architecture.display()));
    let layers = match parse_layers(&markdown) {
        Ok(layers) => layers,
        Err(problem) => return vec![problem],
    };
    // main.rs reaches the library as `mcpgate::`, so it has a place in the
    // layers only if the table gives it one.
    let lists_main = layers.iter().flatten().any(|module| module == "main");

    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut modules_present = BTreeSet::new();
    let mut edges = Vec::new();
    for file in files {
        let in_src = file
            .strip_prefix(&src)
            .expect("a file found under src/ is under src/");
        let module = top_level_module(in_src);
        if module == "tidy" || (module == "main" && !lists_main) {
            continue;
        }
        let path = Path::new("src")
            .join(in_src)
            .components()
            .map(|part| part.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let source = fs::read_to_string(&file)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()));
        edges.extend(edges_in(&module, &path, &source));
        modules_present.insert(module);
    }
    check(&layers, &edges, &modules_present)
}

/// The top-level module of a file, given its path inside `src/`: `foo` for
/// `foo.rs` and for everything under `foo/`; `lib` for `lib.rs`.
fn top_level_module(in_src: &Path) -> String {
    let first = in_src
        .components()
        .next()
        .expect("a file inside src/ has a path inside src/")
        .as_os_str()
        .to_str()
        .unwrap_or_else(|| panic!("src/{} is not a UTF-8 path", in_src.display()));
    first.strip_suffix(".rs").unwrap_or(first).to_owned()
}

/// Pushes every `.rs` file under `directory`, at any depth, onto `files`.
fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", directory.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn imports_follow_the_layers_in_architecture_md() {
    let problems = problems_in_crate(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        problems.is_empty(),
        "{} problem(s) with the module layering (see `{LAYERS_HEADING}` in {ARCHITECTURE_MD}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|row| row.iter().map(|&module| module.to_owned()).collect())
            .collect()
    }

    fn present(modules: &[&str]) -> BTreeSet<String> {
        modules.iter().map(|&module| module.to_owned()).collect()
    }

    fn targets(edges: &[Edge]) -> Vec<(&str, usize)> {
        edges
            .iter()
            .map(|edge| (edge.to.as_str(), edge.line))
            .collect()
    }

    #[test]
    fn parses_the_layers_table_and_stops_at_the_next_section() {
        let markdown = "\
# Architecture

| module | owns |
|---|---|
| `http` | not a layer |

## Layers

Top of the stack first.

```
## Layers
| not | this |
```

| layer | modules |
|---|---|
| faces of the gateway | `http`, `lib` |
| endpoints | `relay` |
| foundations | `config`,`metrics` |

## Code map

| layer | modules |
|---|---|
| ignored | `cli` |
";
        assert_eq!(
            parse_layers(markdown),
            Ok(layers(&[
                &["http", "lib"],
                &["relay"],
                &["config", "metrics"]
            ]))
        );
    }

    #[test]
    fn a_malformed_layers_table_is_an_error() {
        assert!(parse_layers("# Architecture\n\n## Code map\n").is_err());
        assert!(parse_layers("## Layers\n\nno table\n").is_err());
        let unquoted = "## Layers\n| layer | modules |\n|---|---|\n| top | http |\n";
        let error = parse_layers(unquoted).expect_err("a name without backticks");
        assert!(error.contains("docs/ARCHITECTURE.md:4:"), "{error}");
        let twice = "## Layers\n| l | m |\n|---|---|\n| a | `x` |\n| b | `y`, `x` |\n";
        let error = parse_layers(twice).expect_err("a module in two layers");
        assert!(error.contains("`x` is listed again"), "{error}");
    }

    #[test]
    fn an_upward_import_is_reported_with_its_file_and_line() {
        let source = "//! Metrics.\n\nuse crate::http::Server;\n";
        let mut edges = edges_in("metrics", "src/metrics.rs", source);
        // Down the table, even past a layer: fine.
        edges.extend(edges_in("relay", "src/relay.rs", "use crate::metrics;\n"));
        let problems = check(
            &layers(&[&["http"], &["relay"], &["metrics"]]),
            &edges,
            &present(&["http", "relay", "metrics"]),
        );
        assert_eq!(
            problems,
            [
                "src/metrics.rs:3: `metrics` imports `http`, which is above it in docs/ARCHITECTURE.md's layers"
            ]
        );
    }

    #[test]
    fn a_cycle_between_modules_of_one_layer_is_reported_once() {
        let mut edges = edges_in("session", "src/session.rs", "use crate::outbox::Outbox;\n");
        edges.extend(edges_in(
            "outbox",
            "src/outbox/mod.rs",
            "\nuse crate::session::Id;\nfn f() { crate::session::g() }\n",
        ));
        let problems = check(
            &layers(&[&["session", "outbox"]]),
            &edges,
            &present(&["session", "outbox"]),
        );
        assert_eq!(
            problems,
            ["import cycle `outbox` -> `session` -> `outbox`: \
              src/outbox/mod.rs:2 (`outbox` imports `session`), \
              src/session.rs:1 (`session` imports `outbox`)"]
        );
    }

    #[test]
    fn a_cycle_through_three_modules_lists_them_in_order() {
        let edges = [
            ("a", "src/a.rs", "use crate::b;\n"),
            ("b", "src/b.rs", "use crate::c;\n"),
            ("c", "src/c.rs", "\n\nuse crate::a;\n"),
        ]
        .iter()
        .flat_map(|&(module, path, source)| edges_in(module, path, source))
        .collect::<Vec<_>>();
        let problems = check(
            &layers(&[&["a", "b", "c"]]),
            &edges,
            &present(&["a", "b", "c"]),
        );
        assert_eq!(
            problems,
            [
                "import cycle `a` -> `b` -> `c` -> `a`: src/a.rs:1 (`a` imports `b`), \
              src/b.rs:1 (`b` imports `c`), src/c.rs:3 (`c` imports `a`)"
            ]
        );
    }

    #[test]
    fn a_grouped_multiline_import_is_one_edge_per_module_on_its_own_line() {
        let source = "\
use std::sync::Arc;
pub use crate::{
    config::{Config, Server},
    launcher::{self, conn::{Conn, Reply}, pool::Pool},
    // session::Id,
    metrics,
};
";
        let edges = edges_in("relay", "src/relay.rs", source);
        assert_eq!(
            targets(&edges),
            [("config", 3), ("launcher", 4), ("metrics", 6)]
        );
        assert!(
            edges
                .iter()
                .all(|edge| edge.from == "relay" && edge.path == "src/relay.rs")
        );
    }

    #[test]
    fn an_inline_crate_path_is_an_edge() {
        let source =
            "fn f() {\n    crate::metrics::error(\"x\");\n    crate::http::reply::ok()\n}\n";
        assert_eq!(
            targets(&edges_in("http", "src/http/ops.rs", source)),
            [("metrics", 2)]
        );
    }

    #[test]
    fn paths_in_comments_and_literals_and_relative_paths_are_not_edges() {
        let source = r##"
// use crate::http;
/// See [`crate::http::serve`].
//! crate::http
/* crate::http /* nested */ crate::http */
const URL: &str = "http://x/crate::http";
const RAW: &str = r#"crate::http "quoted" "#;
const QUOTE: char = '"';
fn f<'a>(x: &'a str) -> [char; 2] { ['\'','"'] }
use super::http;
use self::http::X;
pub(crate) fn g() {}
use crate::config;
"##;
        assert_eq!(
            targets(&edges_in("relay", "src/relay.rs", source)),
            [("config", 13)]
        );
    }

    #[test]
    fn a_module_missing_from_the_table_or_from_src_is_reported() {
        let problems = check(
            &layers(&[&["http", "lib"], &["core"]]),
            &[],
            &present(&["http", "lib", "reload"]),
        );
        assert_eq!(
            problems,
            [
                "`reload` is a module in src/ but is not in the layers table in docs/ARCHITECTURE.md",
                "`core` is in the layers table in docs/ARCHITECTURE.md but there is no such module in src/",
            ]
        );
    }

    #[test]
    fn paths_to_items_of_lib_rs_are_not_imports_between_modules() {
        let edges = edges_in("metrics", "src/metrics.rs", "use crate::RunError;\n");
        let problems = check(
            &layers(&[&["lib"], &["metrics"]]),
            &edges,
            &present(&["lib", "metrics"]),
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn every_elementary_cycle_is_found_once_up_to_the_limit() {
        // Every ordered pair of 4 nodes: 6 cycles of two, 8 of three, 6 of four.
        let complete: Vec<Vec<usize>> = (0..4)
            .map(|from| (0..4).filter(|&to| to != from).collect())
            .collect();
        let cycles = elementary_cycles(&complete, 100);
        assert_eq!(cycles.len(), 20);
        let distinct: BTreeSet<&Vec<usize>> = cycles.iter().collect();
        assert_eq!(distinct.len(), 20);
        assert!(
            cycles
                .iter()
                .all(|cycle| cycle.iter().min() == Some(&cycle[0]))
        );
        assert_eq!(elementary_cycles(&complete, 7).len(), 7);
        assert!(elementary_cycles(&[vec![1], vec![2], vec![]], 100).is_empty());
    }
}
