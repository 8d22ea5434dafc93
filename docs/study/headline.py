"""The headline table of docs/study.md from the sweeps' results (docs/study/<data>.csv and .md):
for each data set and budget of 1, 2 and 4 model evaluations, the best schedule, the runner-up and
the best schedule on a local-field model, with the data's own floor. Run from the repository root
(docs/study/run.sh does)."""

import csv
local={"Euler (velocity)","Heun (velocity)","DDIM (eps)","DPM++ 2M (eps)"}
short={"consistency multistep":"consistency","DDIM (eps)":"DDIM","DPM++ 2M (eps)":"DPM++ 2M","Euler (velocity)":"Euler","Heun (velocity)":"Heun"}
rows=["| data | NFE ≤ | winner | sw2 | runner-up | best local-field schedule | vs winner | floor |", "|---|---|---|---|---|---|---|---|"]
for d in ["checker","moons","eight","spirals"]:
    pts=list(csv.DictReader(open(f"docs/study/{d}.csv")))
    fl=[l for l in open(f"docs/study/{d}.md") if "floor" in l][0].split("score ")[1].split(" (")[0]
    fm,fs=[float(x) for x in fl.split(" ± ")]
    for b in [1,2,4]:
        best={}
        for p in pts:
            n=int(p["nfe"]); m=float(p["mean"]); s=float(p["std"])
            if n<=b and m==m and m!=float('inf'):
                if p["label"] not in best or m<best[p["label"]][0]: best[p["label"]]=(m,s,n)
        r=sorted(best.items(), key=lambda kv: kv[1][0])
        w=r[0]; bl=[x for x in r if x[0] in local][0]
        n=lambda l: short.get(l,l)
        rows.append(f"| {d} | {b} | {n(w[0])} ({w[1][2]}) | {w[1][0]:.3f} ± {w[1][1]:.3f} | {n(r[1][0])} {r[1][1][0]:.3f} ± {r[1][1][1]:.3f} | {n(bl[0])} ({bl[1][2]}) {bl[1][0]:.3f} ± {bl[1][1]:.3f} | {bl[1][0]/w[1][0]:.1f}× | {fm:.3f} ± {fs:.3f} |")
print("\n".join(rows))
