#!/usr/bin/env bash
# The one GPU run of issue 34, in order: (1) every GPU path once, (2) the training step's speed against plain
# PyTorch, (3) the per-layer GPU time, (4) the layer-shape answer on a GPU, (5) a first GPU stem study and its
# report. Each step has a time limit and the whole run a budget (default 550 s): it stops itself in time, the study
# taking what the items before it left (at least 2 minutes; it runs the reference stem first, so a study cut short
# still pairs each finished stem with it). A step that fails is logged and the next one runs.
#
#   bash benchmarks/gpu_run.sh [--dry-run] [--pack FILE] [--wheels DIR] [--budget-s N] [--items 1,2,...] [OUTDIR]
#
# OUTDIR (else $OUT, the device tool's output folder) receives 4 files: summary.md (what ran, what failed, the
# figures: for benchmarks/RESULTS.md), steps.tsv (step, status, seconds, note), gpu_run.log (every step's output)
# and gpu_run.tar.gz (every file the steps wrote, under gpu_run/). Exit status 1 when a step failed or timed out.
# --dry-run: every step on the CPU at a toy size (a generated 100-image pack in the real pack's layout, xresnet18 cut
# to one narrow block a stage, 32 px, 1 epoch), skipping only what needs CUDA, which the summary says per step;
# tests/test_gpu_run.py runs it.
# --items: only these of the five items (the setup steps always run); the others are listed as skipped.
#
# Before the run, from the project root, once (both folders git-ignored, carried to the machine):
#   ../shared/gpu/fetch-wheels.sh .gpuwheels adjustText==1.4.0    # the GPU image lacks adjustText too
#   mkdir -p .gpudata && cp ../shared/data/imagenette-128-webp.tar.gz .gpudata/
#   printf '/.gpuwheels/\n/.gpudata/\n' >> .git/info/exclude
# The run (device tool; 44 MiB pack + 6 MB wheels + the tree, under its 64 MiB; 4 files come back):
#   run(command="PYTHONUNBUFFERED=1 bash benchmarks/gpu_run.sh", carry=[".gpuwheels", ".gpudata"], timeout_s=600)
# For the whole 6 x 2 study, when the device time allows two calls back to back on the warm machine (its /tmp kept):
#   run(command="PYTHONUNBUFFERED=1 bash benchmarks/gpu_run.sh --items 1,2,3,4 --budget-s 330", carry=…, timeout_s=380)
#   run(command="PYTHONUNBUFFERED=1 bash benchmarks/gpu_run.sh --items 5 --budget-s 420", carry=…, timeout_s=470)
set -uo pipefail
invocation="bash benchmarks/gpu_run.sh${*:+ $*}"

dry=0 pack=${GPU_RUN_PACK:-.gpudata/imagenette-128-webp.tar.gz} wheels=${GPU_RUN_WHEELS:-.gpuwheels} budget="" items="" dest=""
while (($#)); do
  case $1 in
    --dry-run) dry=1 ;;
    --pack|--wheels|--budget-s|--items)
      [ $# -ge 2 ] || { echo "gpu_run.sh: $1 needs a value; see the header of benchmarks/gpu_run.sh." >&2; exit 2; }
      case $1 in --pack) pack=$2 ;; --wheels) wheels=$2 ;; --budget-s) budget=$2 ;; --items) items=$2 ;; esac
      shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_run.sh: unknown option $1; use --dry-run, --pack, --wheels, --budget-s or --items." >&2; exit 2 ;;
    *) dest=$1 ;;
  esac
  shift
done
dest=${dest:-${OUT:-}}
[ -n "$dest" ] || { echo "gpu_run.sh: no output folder; pass one (OUTDIR) or set OUT." >&2; exit 2; }
[[ -z "$budget" || "$budget" =~ ^[0-9]+$ ]] || { echo "gpu_run.sh: --budget-s $budget is not a whole number of seconds." >&2; exit 2; }
[[ -z "$items" || "$items" =~ ^[1-5](,[1-5])*$ ]] || { echo "gpu_run.sh: --items $items is not a list of the items 1 to 5 like 1,2,3." >&2; exit 2; }
mkdir -p "$dest" || { echo "gpu_run.sh: cannot create the output folder $dest; pass a writable one." >&2; exit 2; }
dest=$(cd "$dest" && pwd) pack=$(realpath -m "$pack") wheels=$(realpath -m "$wheels")
cd "$(dirname "$0")/.." && root=$PWD
py=${PYTHON:-python3}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpu_run.XXXXXX")
work=$scratch/gpu_run logs=$scratch/gpu_run/logs
mkdir -p "$logs"
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} MPLBACKEND=Agg
start=$(date +%s)

if ((dry)); then
  budget=${budget:-240} device=cpu trunk=xresnet18 size=32 bs=8 data=$scratch/imagenette-128 study_min=30 slow=3
  # auto would probe the CPU (experiments/cpu_format.py), and xresnet18's full widths cost minutes on a loaded CPU:
  # the dry run checks the steps, not the CPU's best format or a real trunk
  fixed=(train.precision=fp32 train.channels_last=false 'trunk.layers=[1,1,1,1]' 'trunk.widths=[64,32,32,32]')
else
  budget=${budget:-550} device=cuda trunk=xresnet50 size=128 bs=64 data=/tmp/imagenette-128 study_min=120 slow=1
  fixed=()
fi
cache=$( ((dry)) && echo "$scratch/cache" || echo /tmp/stemlab-cache)  # on the GPU kept for a second call
deadline=$((start + budget))
report_limit=60
: >"$dest/steps.tsv"
rm -f "$dest/summary.md" "$dest/gpu_run.tar.gz"  # an earlier run's
log=$dest/gpu_run.log
: >"$log"

record() {  # record NAME STATUS SECONDS NOTE
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$dest/steps.tsv"
  printf '== %-22s %-9s %4s s  %s\n' "$1" "$2" "$3" "$4"
}

item=0  # the issue's item the steps below belong to (0: setup, always run)
wanted() { [ -z "$items" ] || ((item == 0)) || [[ ",$items," == *",$item,"* ]]; }

skip() {  # skip NAME WHY
  record "$1" skipped 0 "$2"
}

# step NAME LIMIT_S RESERVE_S COMMAND...: COMMAND under the smaller of LIMIT_S (times 3 in a dry run: a loaded CPU)
# and the budget left once RESERVE_S are kept for the steps after it; its output in logs/NAME.log and gpu_run.log
step() {
  local name=$1 limit=$(($2 * slow)) reserve=$3 note=${NOTE:-}
  shift 3
  wanted || { skip "$name" "item $item is not in --items $items"; return 0; }
  local left=$((deadline - $(date +%s) - reserve))
  ((left >= 5)) || { skip "$name" "the run's budget of $budget s was spent before it"; return 0; }
  ((limit < left)) || limit=$left
  local t0 rc secs
  t0=$(date +%s)
  printf '\n== %s (limit %d s): %s\n' "$name" "$limit" "$*" >>"$log"
  timeout -k 15 "$limit" "$@" >"$logs/$name.log" 2>&1
  rc=$?
  cat "$logs/$name.log" >>"$log"
  secs=$(($(date +%s) - t0))
  case $rc in
    0) record "$name" ran "$secs" "$note" ;;
    124|137) if [ -n "${CUT_OK:-}" ]; then record "$name" "cut short" "$secs" "stopped at its limit of $limit s${note:+; $note}"
             else record "$name" "timed out" "$secs" "stopped at its limit of $limit s"; fi ;;
    *) record "$name" failed "$secs" "exit $rc: $(grep -v '^[[:space:]]*$' "$logs/$name.log" | tail -n 1 | cut -c1-300)" ;;
  esac
}

finish() {  # the summary and the one archive, also after an interruption
  trap - EXIT INT TERM
  "$py" benchmarks/gpu_summary.py "$work" "$dest" --mode "$([ $dry = 1 ] && echo dry-run || echo gpu)" \
    --started "$start" --command "$invocation" >>"$log" 2>&1
  [ -s "$dest/summary.md" ] ||
    { printf '# GPU run (the summary script failed; see gpu_run.log)\n\n'; cat "$dest/steps.tsv"; } >"$dest/summary.md"
  cp "$dest/steps.tsv" "$dest/summary.md" "$work/" 2>/dev/null
  tar -czf "$dest/gpu_run.tar.gz" -C "$scratch" --exclude='*.pt' --exclude='.submitit' gpu_run
  rm -rf "$scratch"
  echo "gpu_run.sh: $(cut -f2 "$dest/steps.tsv" | sort | uniq -c | xargs) in $(($(date +%s) - start)) s; see $dest/summary.md"
  grep -qP '\t(failed|timed out)\t' "$dest/steps.tsv" && exit 1
  exit 0
}
trap finish EXIT
trap 'exit 130' INT TERM

# ---- setup: the wheels the GPU image lacks, the images, the versions
before_study=$((study_min + report_limit + 10))  # what the steps before the study leave it at least
if ((dry)); then
  skip wheels "dry run: this machine has the project's packages installed"
  NOTE="a generated 100-image pack in the real pack's layout" \
    step pack 60 "$before_study" bash -c "'$py' benchmarks/gpu_tiny_pack.py '$scratch/tiny.tar.gz' && tar -xzf '$scratch/tiny.tar.gz' -C '$scratch'"
else
  step wheels 60 "$before_study" bash -c "ls '$wheels'/*.whl >/dev/null 2>&1 || { echo 'no wheels in $wheels; fetch them \
with ../shared/gpu/fetch-wheels.sh and carry the folder (see the header of benchmarks/gpu_run.sh).'; exit 2; }
    '$py' -m pip install -q --no-index --no-deps --no-compile --target /tmp/site '$wheels'/*.whl"
  export PYTHONPATH=/tmp/site:$PYTHONPATH
  step pack 60 "$before_study" bash -c "[ -f '$pack' ] || { echo 'no image pack at $pack; copy \
../shared/data/imagenette-128-webp.tar.gz there and carry its folder (see the header of benchmarks/gpu_run.sh).'; exit 2; }
    tar -xzf '$pack' -C /tmp"
fi
step versions 60 "$before_study" "$py" benchmarks/gpu_versions.py "$work/versions.json"

# ---- 1. every GPU path once (the CUDA path of stem.match=time: is one of the gpu tests)
item=1
train_common=(logger=none train.save_model=false "${fixed[@]}")
imagenette=(data=imagenette "data.root=$data" "data.cache_dir=$cache" data.download=false "data.image_size=$size"
            $( ((dry)) && echo data.workers=1))  # one decoding process for the dry run's 100 images
if ((dry)); then
  skip cuda_tests "needs a CUDA GPU: the tests marked gpu skip without one"
  NOTE="synthetic 16-px images instead of mnist5k's 4000 (the default data) on the CPU" \
    step train_default 90 "$before_study" "$py" train.py train.device=cpu "${train_common[@]}" data=synthetic \
    data.n_train=32 data.n_valid=16 data.image_size=16 train.bs=8 train.epochs=1 profile.latency=false \
    "hydra.run.dir=$work/train_default"
  NOTE="the cache stays in host memory on the CPU" \
    step train_imagenette 90 "$before_study" "$py" train.py train.device=cpu "${train_common[@]}" "${imagenette[@]}" \
    "trunk=$trunk" "train.bs=$bs" train.epochs=1 profile.latency=false "hydra.run.dir=$work/train_imagenette"
else
  step cuda_tests 90 "$before_study" "$py" -m pytest -m gpu -rs tests/test_gpu_paths.py
  step train_default 60 "$before_study" "$py" train.py train.device=cuda "${train_common[@]}" \
    "hydra.run.dir=$work/train_default"
  step train_imagenette 90 "$before_study" "$py" train.py train.device=cuda "${train_common[@]}" "${imagenette[@]}" \
    data.preload=true "trunk=$trunk" train.epochs=1 "hydra.run.dir=$work/train_imagenette"
fi

# ---- 2. speed: stemlab's step against plain PyTorch, compile off and on, MFU
item=2
if ((dry)); then
  NOTE="torch.compile on skipped: on the CPU inductor compiles for minutes" \
    step speed 120 "$before_study" "$py" benchmarks/gpu_speed.py --out "$work/speed" --compile off --batches 2 \
    --repeats 1 "trunk=$trunk" "${imagenette[@]}" train.bs=4 train.device=cpu "${fixed[@]}"
else
  step speed 120 "$before_study" "$py" benchmarks/gpu_speed.py --out "$work/speed" --budget-s 75 --batches 20 \
    "trunk=$trunk" "${imagenette[@]}" data.preload=true train.bs=256 train.device=cuda
fi

# ---- 3. per-layer time: forward and training step, per stage and layer, roofline, sum vs end to end
item=3
for stem in xresnet_3conv resnet_7x7 patchify_4x4; do
  step "profile_$stem" 40 "$before_study" "$py" -m analyze profile "stem=$stem" "trunk=$trunk" data=synthetic \
    "data.image_size=$size" "train.bs=$((dry ? 2 : bs))" "train.device=$device" "profile.budget_s=$((dry ? 0 : 4))" \
    logger=none "${fixed[@]}" --layers --out "$work/profile/$stem"
done

# ---- 4. the layer-shape answer: fp32 and bf16, contiguous and channels_last
item=4
if ((dry)); then
  step shapes 60 "$before_study" "$py" -m analyze shapes --device cpu --families conv1x1 --precision fp32 bf16 \
    --memory-format contiguous channels_last --batch 2 --sweep --budget-s 2 --repeats 2 --out "$work/shapes"
else
  step shapes 60 "$before_study" "$py" -m analyze shapes --device cuda --precision fp32 bf16 \
    --memory-format contiguous channels_last --budget-s 40 --out "$work/shapes"
fi

# ---- 5. the study, in the minutes left, and its report
item=5
study=("$py" train.py -m +experiment=stem_study_imagenette128_gpu "${imagenette[@]}" logger=none
       "hydra.sweep.dir=$work/study")
if ((dry)); then
  NOTE="2 stems x 2 seeds of the preset's 6 x 2, 1 epoch" \
    step study 120 $((report_limit + 10)) "${study[@]}" "trunk=$trunk" train.epochs=1 "train.bs=$bs" \
    train.device=cpu "${fixed[@]}" stem=resnet_7x7,xresnet_3conv seed=0,1 hydra.launcher.n_jobs=2
else
  CUT_OK=1 step study 600 $((report_limit + 10)) "${study[@]}"
fi
step report "$report_limit" 0 "$py" -m analyze report "$work/study" --out "$work/report"
