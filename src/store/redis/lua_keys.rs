//! Every key a Lua script touches is passed in `KEYS`: each `redis.call` key argument
//! in `lua/*.lua` is `KEYS[…]` or a local assigned from `KEYS[…]` alone, never a
//! name a script builds (`..`, or a naming function), and every script is loaded
//! whole, with no prelude prepended. A key a script names itself is hidden from the
//! caller and, on Cluster, from the slot check.

use std::path::Path;

/// Commands without a key.
const NO_KEY: &[&str] = &["TIME"];
/// Commands each of whose arguments is a key.
const ALL_KEYS: &[&str] = &["DEL", "EXISTS", "MGET", "UNLINK", "TOUCH"];
/// Commands whose first argument is their one key.
const FIRST_KEY: &[&str] = &[
    "GET",
    "SET",
    "INCR",
    "DECR",
    "EXPIRE",
    "PEXPIRE",
    "TTL",
    "PTTL",
    "HGET",
    "HSET",
    "HDEL",
    "HEXISTS",
    "HGETALL",
    "HMGET",
    "HLEN",
    "ZADD",
    "ZREM",
    "ZCARD",
    "ZRANGE",
    "ZRANK",
    "ZSCORE",
    "ZRANGEBYSCORE",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYRANK",
    "SADD",
    "SREM",
    "SMEMBERS",
    "XADD",
    "XTRIM",
    "XRANGE",
    "XREVRANGE",
];
/// Calls whose command is not written out, with its argument: stream_append.lua
/// publishes (`SPUBLISH` or `PUBLISH`) to a channel, no key, that the caller checked
/// lies in the stream's slot.
const UNNAMED: &[(&str, &str)] = &[("stream_append.lua", "ARGV[7]")];

fn lua_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/redis/lua")
}

/// `src` without its comments (`--` to the end of the line, outside strings).
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|line| {
            let mut quote = None;
            let mut escaped = false;
            for (i, c) in line.char_indices() {
                match quote {
                    Some(q) if !escaped && c == q => quote = None,
                    Some(_) => {}
                    None if c == '\'' || c == '"' => quote = Some(c),
                    None if line[i..].starts_with("--") => return &line[..i],
                    None => {}
                }
                escaped = quote.is_some() && !escaped && c == '\\';
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where in `text` each character sits: at bracket depth 0 outside strings (`true`).
fn top_level(text: &str) -> Vec<(usize, char, bool)> {
    let (mut depth, mut quote, mut escaped) = (0i32, None, false);
    let mut out = Vec::new();
    for (i, c) in text.char_indices() {
        let top = quote.is_none() && depth == 0;
        match quote {
            Some(q) if !escaped && c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            },
        }
        escaped = quote.is_some() && !escaped && c == '\\';
        out.push((i, c, top && quote.is_none() && !"([{".contains(c)));
    }
    out
}

/// `text` split at its top-level commas, each part trimmed.
fn split_args(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut from = 0;
    for (i, c, top) in top_level(text) {
        if top && c == ',' {
            parts.push(text[from..i].trim().to_owned());
            from = i + 1;
        }
    }
    parts.push(text[from..].trim().to_owned());
    parts
}

/// The arguments of every `redis.call(…)` / `redis.pcall(…)` in `src`.
fn calls(src: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in ["redis.call(", "redis.pcall("] {
        for (at, _) in src.match_indices(start) {
            let args = &src[at + start.len()..];
            let close = top_level(args).into_iter().find(|&(_, c, top)| top && c == ')');
            let (end, _, _) = close.expect("a redis.call without its closing parenthesis");
            found.push(split_args(&args[..end]));
        }
    }
    found
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `KEYS[<index>]`, the index an expression of numbers and locals.
fn is_keys_ref(text: &str) -> bool {
    text.strip_prefix("KEYS[")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|index| !index.contains(['[', ']', '\'', '"', '(']) && !index.contains(".."))
}

/// An expression made of `KEYS[…]` alone, or a choice between them (`c and KEYS[2]
/// or KEYS[1]`): no string, call, concatenation or other table.
fn from_keys_alone(expr: &str) -> bool {
    let mut rest = String::new();
    let mut text = expr;
    let mut keys = 0;
    while let Some(at) = text.find("KEYS[") {
        let close = text[at..].find(']').map_or(text.len(), |c| at + c + 1);
        if !is_keys_ref(&text[at..close]) {
            return false;
        }
        rest.push_str(&text[..at]);
        keys += 1;
        text = &text[close..];
    }
    rest.push_str(text);
    keys > 0 && !rest.contains(['\'', '"', '(', '[', '{', ':']) && !rest.contains("..") && !rest.contains('.')
}

/// Every assignment to a plain local in `src`: (name, the expression given it). An
/// expression missing from a multiple assignment is `nil`.
fn assignments(src: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for line in src.lines() {
        let chars = top_level(line);
        for (n, &(i, c, top)) in chars.iter().enumerate() {
            let before = n.checked_sub(1).map(|b| chars[b].1);
            let after = chars.get(n + 1).map(|a| a.1);
            if !top || c != '=' || before.is_some_and(|b| "=~<>".contains(b)) || after == Some('=') {
                continue;
            }
            // The names before `=`: identifiers separated by commas, not fields.
            let mut names = Vec::new();
            let mut lhs = line[..i].trim_end();
            loop {
                let start = lhs.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |p| p + 1);
                let name = &lhs[start..];
                if !is_identifier(name) || lhs[..start].ends_with(['.', ':']) {
                    break;
                }
                names.push(name.to_owned());
                lhs = lhs[..start].trim_end();
                match lhs.strip_suffix(',') {
                    Some(more) => lhs = more.trim_end(),
                    None => break,
                }
            }
            names.reverse();
            let exprs = split_args(&line[i + 1..]);
            for (k, name) in names.into_iter().enumerate() {
                found.push((name, exprs.get(k).cloned().unwrap_or_else(|| "nil".into())));
            }
        }
    }
    found
}

/// What is wrong with `file`'s keys, one line each.
fn check(file: &str, src: &str) -> Vec<String> {
    let src = strip_comments(src);
    let assigned = assignments(&src);
    let mut wrong = Vec::new();
    for args in calls(&src) {
        let call = format!("{file}: redis.call({})", args.join(", "));
        let command = &args[0];
        let named = command.strip_prefix('\'').and_then(|c| c.strip_suffix('\'')).map(str::to_ascii_uppercase);
        let keys: &[String] = match named.as_deref() {
            Some(c) if NO_KEY.contains(&c) => &[],
            Some(c) if ALL_KEYS.contains(&c) => &args[1..],
            Some(c) if FIRST_KEY.contains(&c) => &args[1..args.len().min(2)],
            Some(c) => {
                wrong.push(format!("{call}: where are {c}'s keys? (add it to this test's lists)"));
                continue;
            }
            None if UNNAMED.contains(&(file, command.as_str())) => &[],
            None => {
                wrong.push(format!("{call}: the command is not written out, so its keys are unknown"));
                continue;
            }
        };
        for key in keys {
            if is_keys_ref(key) {
                continue;
            }
            if !is_identifier(key) {
                wrong.push(format!("{call}: key `{key}` is not KEYS[…]"));
                continue;
            }
            let given: Vec<&String> = assigned.iter().filter(|(name, _)| name == key).map(|(_, e)| e).collect();
            if given.is_empty() || !given.iter().all(|e| from_keys_alone(e)) {
                wrong.push(format!("{call}: `{key}` is not assigned from KEYS[…] alone ({given:?})"));
            }
        }
    }
    // Nor is a key name made from another key's (a prefix cut from KEYS[1]).
    for (at, _) in src.match_indices("KEYS[") {
        let before = src[..at].trim_end();
        let after = src[at..].find(']').map_or("", |c| src[at + c + 1..].trim_start());
        if before.ends_with("..") || after.starts_with("..") || after.starts_with(':') || before.ends_with("sub(") {
            wrong.push(format!("{file}: a name made from a key: …{}…", &src[at.saturating_sub(20)..at + 10]));
        }
    }
    if src.contains("--[[") {
        wrong.push(format!("{file}: a long comment (this test reads `--` to the end of the line)"));
    }
    wrong
}

#[test]
fn every_key_a_script_touches_is_passed_in_keys() {
    let mut files: Vec<_> = std::fs::read_dir(lua_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .collect();
    files.sort();
    assert!(files.len() >= 13, "the scripts are in {:?}", lua_dir());
    let mut wrong = Vec::new();
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        wrong.extend(check(&file, &std::fs::read_to_string(path).unwrap()));
    }
    assert!(wrong.is_empty(), "keys not passed in KEYS:\n{}", wrong.join("\n"));
}

/// Each script is loaded whole: no prelude (such as the one that named keys beside
/// `KEYS[1]`) is prepended to it.
#[test]
fn every_script_is_loaded_whole() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/redis");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "rs") || path.ends_with("lua_keys.rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        for (at, _) in src.match_indices("include_str!(\"lua/") {
            let call = &src[at.saturating_sub("Script::new(".len())..];
            let name_end = src[at..].find(')').map_or(src.len(), |e| at + e);
            let name = &src[at + "include_str!(\"lua/".len()..name_end - 1];
            let whole = call.starts_with("Script::new(include_str!(") && src[name_end..].starts_with("))");
            assert!(whole, "{}: lua/{name} is not loaded alone (Script::new(include_str!(…)))", path.display());
            loaded.push(name.to_owned());
        }
    }
    for file in std::fs::read_dir(lua_dir()).unwrap() {
        let name = file.unwrap().file_name().to_string_lossy().into_owned();
        assert!(loaded.contains(&name), "lua/{name} is no script of its own (a prelude?)");
    }
}

/// The checks themselves: what they must catch and what they must let through.
#[test]
fn the_check_catches_named_keys() {
    let caught = |src: &str| !check("t.lua", src).is_empty();
    assert!(caught("redis.call('GET', 'p{mm}:q:' .. queue)"));
    assert!(caught("local k = mm('q:' .. o.queue)\nredis.call('ZREM', k, acct)"));
    assert!(caught("redis.call('ZREM', mm('q:' .. o.queue), acct)"));
    assert!(caught("local MM = string.sub(KEYS[1], 1, -8)\nredis.call('GET', MM .. 'x')"));
    assert!(caught("local k = KEYS[1] .. ':x'\nredis.call('GET', k)"));
    assert!(caught("local k = KEYS[1]\nif x then k = ARGV[1] end\nredis.call('GET', k)"));
    assert!(caught("for _, k in ipairs(ARGV) do redis.call('DEL', k) end"));
    assert!(caught("redis.call('DEL', KEYS[1], ARGV[1])"));
    assert!(caught("redis.call('RENAME', KEYS[1], KEYS[2])"));
    assert!(caught("redis.call(ARGV[1], KEYS[1])"));
    let fine = |src: &str| check("t.lua", src).is_empty();
    assert!(fine("redis.call('GET', KEYS[1]) -- redis.call('GET', 'x' .. y)"));
    assert!(fine("local q, size = KEYS[3], tonumber(ARGV[1])\nredis.call('ZRANGE', q, 0, size)"));
    assert!(fine("local a, b = KEYS[1 + 2 * i], KEYS[2 + 2 * i]\nredis.call('GET', a)\nredis.call('DEL', b)"));
    assert!(fine("local pair\npair = on and KEYS[2] or KEYS[1]\nredis.call('HSET', pair, 'n:' .. x, 1)"));
    assert!(fine("local t = redis.call('TIME')\nredis.call('HSET', KEYS[1], 'f', cjson.encode({a = 1}))"));
}
