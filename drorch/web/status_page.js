// The status page's own script: renders /status.json as the page, and again every 2 s, so it stays current
// without a reload. Every value from the store is escaped, numbers too (a damaged row may hold text anywhere);
// nothing is fetched but /status.json.
const e=s=>String(s??'').replace(/[&<>"']/g,c=>'&#'+c.charCodeAt(0)+';');
const secs=x=>x==null?'-':typeof x==='number'?x.toFixed(0)+' s':e(x);
const run=n=>`<a href="/runs/${e(encodeURIComponent(n))}">run ${e(n)}</a>`;
function render(d){let o='';for(const p of d.playbooks){o+=`<section><h2>${e(p.playbook)}: <span class="${
p.ready===false?'bad':p.ready?'good':''}">${p.ready===null?'never checked':p.ready?'ready':'not ready'}</span></h2>`;
for(const x of p.problems)o+=`<p class="bad">${e(x)}</p>`;
for(const s of p.sites)o+=`<p>site ${e(s.site)}: `+s.hosts.map(h=>`${e(h.host)} <span class="${h.answered===false?
'bad':h.answered?'good':''}">${h.answered===null||h.answered===undefined?'not checked':h.answered?'answers':'silent'}</span>`
).join(', ')+'</p>';
for(const r of p.records)o+=`<p class="record">DNS ${e(r.name)} ${e(r.type)} ${e((r.values||[]).join(' ')||'(none)')
}: <span class="${r.right?'good':'bad'}">${r.right?'points at site '+e(r.points_at)+', where '+e(r.workload)+' runs':
'points at '+(r.points_at==null?'no site':'site '+e(r.points_at))+', and '+e(r.workload)+' runs '+(r.runs_on==null?
'nowhere':'on site '+e(r.runs_on))}</span></p>`;
if(p.drill)o+=`<p>last drill: ${run(p.drill.run)} <span class="${p.drill.passed?
'good':'bad'}">${e(p.drill.state)}</span>, RTO ${secs(p.drill.rto_s)}</p>`;
if(p.rpo)o+=`<p class="rpo">RPO ${secs(p.rpo.rpo_s)}${p.target_s==null?' (no target)':` <span class="${p.rpo.stale?
'bad':'good'}">${p.rpo.stale?'past':'within'} its target</span> of ${secs(p.target_s)}`}, from its oldest newest point (${
e(p.rpo.kind)} ${e(p.rpo.workload)})</p>`;
o+='<table><tr><th>workload</th><th>runs on</th><th>points on</th><th>RPO</th><th>target</th><th>points</th><th>newest is</th></tr>';
for(const w of p.workloads)o+=`<tr class="workload"><td>${e(w.kind)} ${e(w.workload)}</td><td class="runs-on">${
w.runs_on==null?'-':w.seen_by_run!=null?'last seen on site '+e(w.runs_on)+' by run '+e(w.seen_by_run):'site '+
e(w.runs_on)+' (home)'}</td><td>${e(w.site??'-')}</td><td class="${
w.stale?'bad':''}">${secs(w.rpo_s)}${w.stale?' (stale)':''}</td><td>${secs(w.target_s)}</td><td>${e(w.kept)}</td><td class="consistency">${w.consistency==null?'-':
e(w.consistency)+'-consistent'+(w.cut?' (cut '+e(w.cut)+')':'')}</td></tr>`;
o+='</table></section>'}document.getElementById('books').innerHTML=o;o='';
for(const r of d.running){o+=`<h3>${run(r.run)} ${e(r.operation)} ${e(r.playbook)}</h3>
<table><tr><th>#</th><th>workload</th><th>state</th><th>progress</th><th>said</th></tr>`;for(const s of r.steps)o+=
`<tr class="step"><td>${e(s.seq)}</td><td>${e(s.kind)} ${e(s.workload)}</td><td>${e(s.state)}</td><td>${s.bytes_total?
Math.round(100*s.bytes_done/s.bytes_total)+' %':''}</td><td>${e(s.said)}</td></tr>`;o+='</table>'}
document.getElementById('running').innerHTML=o||'<p>none</p>';
document.getElementById('daemons').innerHTML=d.daemons.map(x=>`<li>${e(x.daemon)} <b>${e(x.role)}</b>, heartbeat ${
secs(x.heartbeat_age_s)} ago</li>`).join('');document.getElementById('at').textContent=d.at}
async function tick(){try{const r=await fetch('/status.json');if(r.ok)render(await r.json())}
catch(_){}setTimeout(tick,2000)}render(JSON.parse(document.getElementById('first').textContent));setTimeout(tick,2000);
