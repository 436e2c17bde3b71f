// A real OpenID Connect provider for keyward's console tests: oidc-provider (the certified
// Node.js implementation) with its development login form, one confidential client, and users
// whose `groups` claim puts them in the console's roles.
//
//   node oidc-provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
//
// Any password is accepted; the login name is the user's email. Prints "ready ISSUER" when it
// listens. CLAIMS_IN_USERINFO=1 keeps the claims out of the ID token (oidc-provider's default
// for the code flow); AUTH_METHOD=client_secret_post registers the client for that method.
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
if (!redirectUri) {
  console.error("usage: node oidc-provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI");
  process.exit(2);
}

/** Each test user's groups. */
const GROUPS = {
  "admin@example.com": ["keyward-admins"],
  "ops@example.com": ["keyward-operators", "everyone"],
  "viewer@example.com": ["keyward-viewers"],
  "nobody@example.com": ["finance"],
};

const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: process.env.AUTH_METHOD ?? "client_secret_basic",
    },
  ],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "groups"],
  },
  // The claims of the requested scopes go into the ID token (unless CLAIMS_IN_USERINFO).
  conformIdTokenClaims: process.env.CLAIMS_IN_USERINFO === "1",
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["keyward-tests-only"] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: true, name: id.split("@")[0], groups: GROUPS[id] ?? [] };
      },
    };
  },
});
provider.listen(Number(port), "127.0.0.1", () => console.log(`ready ${issuer}`));
