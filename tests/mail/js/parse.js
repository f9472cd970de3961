// An independent reader for tests/mail/test_compose.py: parse RFC 5322 messages with Node's
// mailparser and print what a mail client would show, as JSON.
//
//   node parse.js < message.eml          one message on stdin -> one JSON object
//   node parse.js --lines                each stdin line is a base64 message -> one JSON line each
//                                         (one node process for many messages: startup is the cost)
'use strict';

const readline = require('readline');
const { simpleParser } = require('mailparser');

// Report the message as sent: no cid: links rewritten to data: URIs, no text<->html derivation.
const OPTIONS = {
  keepCidLinks: true,
  skipHtmlToText: true,
  skipTextToHtml: true,
  skipTextLinks: true,
  skipImageLinks: true,
};

function addresses(field) {
  if (!field) return [];
  return (Array.isArray(field) ? field : [field])
    .flatMap((list) => list.value)
    .map((a) => ({ name: a.name, address: a.address }));
}

async function parse(raw) {
  const mail = await simpleParser(raw, OPTIONS);
  const headers = {};
  for (const [key, value] of mail.headers) {
    if (typeof value === 'string') headers[key] = value;
  }
  return {
    subject: mail.subject ?? null,
    messageId: mail.messageId ?? null,
    from: addresses(mail.from),
    to: addresses(mail.to),
    cc: addresses(mail.cc),
    bcc: addresses(mail.bcc),
    replyTo: addresses(mail.replyTo),
    text: mail.text ?? null,
    html: mail.html || null,
    headers,
    attachments: mail.attachments.map((a) => ({
      filename: a.filename ?? null,
      contentType: a.contentType,
      contentDisposition: a.contentDisposition ?? null,
      cid: a.cid ?? null,
      content: a.content.toString('base64'),
    })),
  };
}

async function main() {
  if (process.argv.includes('--lines')) {
    const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
      let out;
      try {
        out = await parse(Buffer.from(line, 'base64'));
      } catch (err) {
        out = { error: String(err) };
      }
      process.stdout.write(JSON.stringify(out) + '\n');
    }
    return;
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  process.stdout.write(JSON.stringify(await parse(Buffer.concat(chunks))) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
