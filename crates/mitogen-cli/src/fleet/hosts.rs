//! Hosts files (`-H FILE`): one target per line, as `pssh -h` and ansible's
//! inventories of plain names take them, so that a fleet's list lives in a
//! file of its own and moves between `run`, `copy` and `fetch` unchanged.

use std::io::Read;
use std::path::Path;

use mitogen::Target;

/// The targets of one hosts file's text, `name` being the file as given (for
/// the messages). A line is a target in the command line's syntax (chains
/// included), with surrounding whitespace trimmed; blank lines, lines whose
/// first character is `#`, and a `#` comment after whitespace are ignored.
/// A line that is not one target is an error naming the file and line.
pub fn parse(name: &str, text: &str) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = strip_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("hosts file {name}, line {}", n + 1);
        if line.contains(char::is_whitespace) {
            return Err(format!(
                "{}: {line:?} is not one target (one target per line)",
                at()
            ));
        }
        let target = line
            .parse::<Target>()
            .map_err(|e| format!("{}: {e}", at()))?;
        targets.push(target);
    }
    Ok(targets)
}

/// `line` without its comment: from a `#` that begins the line or follows
/// whitespace (a `#` inside a target, as in an `exec:` argument, stays).
fn strip_comment(line: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Reads the hosts file at `path` (`-` is standard input) and parses it.
/// A file that cannot be read is an error naming it.
pub fn read(path: &Path) -> Result<Vec<Target>, String> {
    let name = path.display().to_string();
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text).map(drop))
    };
    read.map_err(|e| format!("cannot read hosts file {name}: {e}"))?;
    parse(&name, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Result<Vec<String>, String> {
        parse("hosts", text).map(|v| v.iter().map(Target::to_string).collect())
    }

    #[test]
    fn comments_blank_lines_and_whitespace_are_skipped() {
        let text = "# the web tier\n\n  web1  \nbastion/web2/sudo:app # behind the jump host\n\t\n#web3\nlocal\n";
        assert_eq!(
            names(text).unwrap(),
            ["web1", "bastion/web2/sudo:app", "local"]
        );
        assert_eq!(names("").unwrap(), Vec::<String>::new());
        assert_eq!(strip_comment("exec:echo,a#b"), "exec:echo,a#b");
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_number() {
        let e = names("web1\n\na//b\n").unwrap_err();
        assert!(e.starts_with("hosts file hosts, line 3: "), "{e}");
        assert!(e.contains("a//b"), "{e}");
        let e = names("web1 web2\n").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("one target per line"),
            "{e}"
        );
    }
}
