// Compiled by `tsc --noEmit` (never run): the published ES module typings,
// through package.json's `import` condition, as a consumer sees them.
import {
  MandateClient,
  MandateError,
  ServerError,
  expressMiddleware,
  fastifyHook,
  type ActionSearchResults,
  type Decision,
  type Entity,
  type SearchResults,
  type SkippedAction,
} from 'mandate-client';

const client = new MandateClient({ url: 'unix:/run/mandate.sock', timeoutMs: 250, onError: (e: MandateError) => e.kind });
const user: Entity = { type: 'user', id: 'bob' };
const account: Entity = { type: 'account', id: 'alice-personal' };

export async function usage(): Promise<void> {
  const ok: boolean = await client.allowed(user, 'view_account', account);
  const decision: Decision = await client.evaluate(user, { name: 'withdraw' }, account, { amount: '1.00' }, { requestId: 'r1' });
  const batch: Decision[] = await client.evaluations({ subject: user, resource: account, evaluations: [{ action: 'view_account' }] }, 'deny_on_first_deny');
  const subjects: SearchResults<Entity> = client.searchSubjects({ subject: { type: 'user' }, action: 'view_account', resource: account });
  const ids: string[] = [];
  for await (const s of subjects) ids.push(s.id);
  const actions: ActionSearchResults = client.searchActions({ subject: user, resource: account }, { pageSize: 10 });
  for await (const a of actions) ids.push(a.name);
  const skipped: SkippedAction[] = actions.skipped;
  try {
    await client.evaluate(user, 'x', account);
  } catch (error) {
    if (error instanceof ServerError) ids.push(`${error.status} ${error.code ?? ''} ${error.field ?? ''} ${error.message}`);
  }
  console.log(ok, decision.reasons, decision.policyVersion, batch, skipped, client.failures, ids);
}

interface Req {
  headers: Record<string, string | string[] | undefined>;
  userId: string;
}
interface Res {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
}
export const guard: (req: Req, res: Res, next: (error?: unknown) => void) => void = expressMiddleware<Req, Res>(client, (req) => ({
  subject: { type: 'user', id: req.userId },
  action: 'view_account',
  resource: account,
}));

interface Reply {
  sent?: boolean;
  code(statusCode: number): Reply;
  header(name: string, value: string): Reply;
  send(payload?: unknown): Reply;
}
export const hook = fastifyHook<Req, Reply>(client, async (req) => Promise.resolve({ subject: { type: 'user', id: req.userId }, action: 'view_account', resource: account }));
