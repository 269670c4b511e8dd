;; A SIP-010-shaped fungible token, enough to move FT balances in fixture tests.
(define-fungible-token fixture-usd)

(define-public (transfer (amount uint) (sender principal) (recipient principal) (memo (optional (buff 34))))
  (begin
    (asserts! (is-eq tx-sender sender) (err u4))
    (ft-transfer? fixture-usd amount sender recipient)))

(define-public (faucet (amount uint))
  (ft-mint? fixture-usd amount tx-sender))

(define-read-only (get-balance (who principal))
  (ok (ft-get-balance fixture-usd who)))
