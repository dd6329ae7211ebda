// A real OpenID Connect provider for the SSO tests (oidc-provider, certified), on loopback only.
//
// Started by tests/e2e/test_sso.py with the socket it already bound and listens on (LISTEN_FD),
// so no other program can take the port. The accounts are read from ACCOUNTS_FILE (JSON:
// {"alice": {"email": ..., "groups": [...]}, ...}) at every token and userinfo request: a test
// changes a person's groups by rewriting the file, as an administrator would in a real IdP.
// The login and consent pages are oidc-provider's own development interactions (any password).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const issuer = env('ISSUER');
const accountsFile = env('ACCOUNTS_FILE');
const groupsClaim = process.env.GROUPS_CLAIM || 'groups';

function account(id) {
  const accounts = JSON.parse(readFileSync(accountsFile, 'utf8'));
  return Object.hasOwn(accounts, id) ? accounts[id] : undefined;
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: env('CLIENT_ID'),
      client_secret: env('CLIENT_SECRET'),
      redirect_uris: [env('REDIRECT_URI')],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: [groupsClaim],
  },
  async findAccount(_ctx, id) {
    if (!account(id)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account(id) };
      },
    };
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['test-only-cookie-key'] },
});

// The development pages import a web font from the internet: nothing in a test may reach out.
provider.use(async (ctx, next) => {
  if (ctx.path === '/favicon.ico') {
    ctx.status = 204; // the browser asks; a 404 would be a console error in the tests
    return;
  }
  await next();
  if (typeof ctx.body === 'string' && ctx.response.is('html')) {
    ctx.body = ctx.body.replace(/@import url\(https?:[^)]*\);?/g, '');
  }
});

const server = createServer(provider.callback());
server.listen({ fd: Number(env('LISTEN_FD')) }, () => {
  process.stdout.write(`oidc-provider ${issuer} ready\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
