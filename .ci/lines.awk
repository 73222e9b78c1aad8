# Classifies the lines of Rust files for the checks in .ci/: prints, per file,
#   <code+comment lines> <comment lines> <file>
# counting only non-blank lines outside test code. Test code is a whole `tests.rs` file, or
# everything from a top-level `#[cfg(test)]` to the end of the file (test modules sit last).
FNR == 1 {
    if (NR > 1) emit()
    name = FILENAME; total = 0; comments = 0
    in_test = (FILENAME ~ /(^|\/)tests\.rs$/)
}
/^#\[cfg\(test\)\]/ { in_test = 1 }
{
    if (in_test) next
    line = $0
    sub(/^[ \t]+/, "", line)
    if (line == "") next
    total++
    if (line ~ /^\/\//) comments++
}
function emit() { printf "%d %d %s\n", total, comments, name }
END { if (NR > 0) emit() }
