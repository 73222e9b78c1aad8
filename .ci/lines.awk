# Classifies the lines of Rust files for the checks in .ci/: prints, per file,
#   <code+comment lines> <comment lines> <file>
# counting only non-blank lines outside test code. Test code is a whole `tests.rs` file, or
# everything from a top-level `#[cfg(test)]` item to the end of the file (test modules sit
# last); a `#[cfg(test)]` on a one-line `mod name;` declaration is not test code itself.
FNR == 1 {
    if (NR > 1) emit()
    name = FILENAME; total = 0; comments = 0; pending = 0
    in_test = (FILENAME ~ /(^|\/)tests\.rs$/)
}
{
    if (in_test) next
    if (pending) {
        pending = 0
        if ($0 !~ /^(pub(\([a-z]+\))? )?mod [A-Za-z_0-9]+;/) { in_test = 1; next }
    }
    if ($0 ~ /^#\[cfg\(test\)\]/) { pending = 1; next }
    line = $0
    sub(/^[ \t]+/, "", line)
    if (line == "") next
    total++
    if (line ~ /^\/\//) comments++
}
function emit() { printf "%d %d %s\n", total, comments, name }
END { if (NR > 0) emit() }
