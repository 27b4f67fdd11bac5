// Compiled (never run) by `npm run typecheck`: the declarations cover what a TypeScript
// caller writes, and a wrong use fails to compile (the @ts-expect-error lines).
import {
  Client, LatchkeyError, InvalidCredentialsError, RateLimitedError, UnknownMethodError, User, Health,
  CredentialChanges, SignUpOutcome,
} from 'latchkey-client';

async function demo(): Promise<void> {
  const lk = new Client('/run/latchkeyd/latchkeyd.sock', { timeout: 10_000, retries: 2 });
  const health: Health = await lk.health();
  const knows: boolean = (health.methods ?? []).includes('SignUp');
  const user: User = await lk.createUser({ email: 'ada@example.com', password: 'correct horse battery staple' });
  const epoch: number = user.credential_epoch;
  try {
    await lk.verifyPassword(user.email, 'guess', { clientIp: '203.0.113.7' });
  } catch (e) {
    if (e instanceof InvalidCredentialsError) {
      const code: string = e.code;
      void code;
    } else if (e instanceof RateLimitedError) {
      const wait: number = e.details.retry_after_secs;
      void wait;
    } else if (e instanceof UnknownMethodError || e instanceof LatchkeyError) {
      void e.kind;
    }
  }
  const outcome: SignUpOutcome = await lk.signUp({ email: 'b@example.com', password: 'correct horse battery staple' });
  if (outcome.outcome === 'created') void outcome.user.id;
  const changes: CredentialChanges = await lk.credentialChanges({ after: 0, limit: 100 });
  for (const change of changes.changes) void change.user_id;
  // @ts-expect-error: the status is 'active' or 'disabled'
  await lk.setStatus(user.id, 'suspended');
  // @ts-expect-error: an id is a number
  await lk.getUser('1');
  void knows;
  void epoch;
  lk.close();
}
void demo;
