// Steady synthetic market activity for a live devnet: every interval one devnet wallet signs a
// real transaction (list, buy or bid) and posts it through the node's own /v2/transactions path,
// so the activity exercises exactly what a wallet would.
import { Cl, Pc, serializeTransaction } from "@stacks/transactions";

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
    try {
      const plan = state.activity(step++);
      if (!plan) return;
      const t = await node.chain.sign(plan);
      const txid = await node.submit(Buffer.from(serializeTransaction(t), "hex"));
      log(`activity: ${plan.fn} by ${plan.sender} -> ${txid}`);
      plan.after?.();
    } catch (e) {
      log(`activity: step skipped (${e.reason ?? e.message})`);
    } finally {
      busy = false;
    }
  }, intervalMs);
  timer.unref?.();
  return () => clearInterval(timer);
}

export { Cl, Pc };
