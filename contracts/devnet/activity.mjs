// Steady synthetic market activity for a live devnet: every interval one devnet wallet signs a
// real transaction (list, buy, auction, bid, settle) and posts it through the node's own /v2/transactions path,
// so the activity exercises exactly what a wallet would.
import { serializeTransaction } from "@stacks/transactions";

export function startActivity(node, state, { intervalMs = 4000, log = () => {} } = {}) {
  if (!state || !state.activity) {
    log("activity: the scenario exposes no market state; nothing to do");
    return () => {};
  }
  let step = 0;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    let snap = null;
    try {
      // The model moves when a step is planned; undo it unless the chain agrees.
      snap = state.snapshot?.();
      const plan = state.activity(step++);
      if (!plan) return;
      const t = await node.chain.sign(plan);
      const txid = await node.submit(Buffer.from(serializeTransaction(t), "hex"));
      const status = node.statusByTxid.get("0x" + txid);
      log(`activity: ${plan.fn} by ${plan.sender} -> ${txid} (${status})`);
      if (status !== "success" && snap) state.restore(snap);
    } catch (e) {
      if (snap) state.restore(snap);
      log(`activity: step skipped (${e.reason ?? e.message})`);
    } finally {
      busy = false;
    }
  }, intervalMs);
  timer.unref?.();
  return () => clearInterval(timer);
}
