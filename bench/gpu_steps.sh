# Sourced by bench/gpu_check.sh and bench/gpu_train.sh: step NAME COMMAND... runs the
# command, logs it to $OUT/NAME.log, shows its last $STEP_TAIL lines, and keeps the first
# failure's exit status in $status (the scripts exit with it).
status=0
step() {
    local name=$1
    shift
    echo "== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    tail -n "${STEP_TAIL:-25}" "$OUT/$name.log"
    echo "== $name: exit $rc"
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
    return $rc
}
